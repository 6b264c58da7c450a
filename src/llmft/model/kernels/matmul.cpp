// fp32 and bf16 matmul forward/backward; see matmul.h.
#include "llmft/model/kernels/matmul.h"

#include <cblas.h>
#include <dlfcn.h>
#include <omp.h>
#include <strings.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/vmath.h"

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

// Rows at or below which the fp32 forward streams the weights through register tiles instead of
// calling sgemm: with few rows (a decode step) the product is bound by reading W once, and
// sgemm's packing of W would read and write it again.
constexpr int64_t kSmallRows = 16;

// out[r, o0:o0+16Q] = inp[r, :] @ W[:, o0:o0+16Q] for r < R; W (IC, OC) row-major.
// R x Q <= 16 accumulators, held in vector registers.
template <int R, int Q>
inline void rows_block(float* out, const float* inp, const float* w, int64_t IC, int64_t OC,
                       int64_t o0) {
  f32x16 acc[R][Q] = {};
  for (int64_t i = 0; i < IC; ++i) {
    const float* wi = w + i * OC + o0;
    f32x16 wv[Q];
    for (int q = 0; q < Q; ++q) load16(wv[q], wi + 16 * q);
    for (int r = 0; r < R; ++r) {
      const float x = inp[r * IC + i];
      for (int q = 0; q < Q; ++q) acc[r][q] += x * wv[q];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < Q; ++q) store16(out + r * OC + o0 + 16 * q, acc[r][q]);
}

// out (N, OC) = inp (N, IC) @ W for N <= kSmallRows. kInOut: W (IC, OC), threads split the
// columns and stream W row by row; kOutIn: W (OC, IC), one dot product per (row, output).
void small_matmul(float* out, const float* inp, const float* w, int64_t N, int64_t IC, int64_t OC,
                  WeightLayout layout) {
  if (layout == WeightLayout::kOutIn) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < OC; ++o) {
      const float* wo = w + o * IC;  // (IC)
      for (int64_t n = 0; n < N; ++n) {
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < IC; ++i) acc += inp[n * IC + i] * wo[i];
        out[n * OC + o] = acc;
      }
    }
    return;
  }
  // kInOut: threads split the columns in blocks of 256; a block runs R rows at a time with
  // R x Q vector accumulators. One row reads W's block as 1 KB runs (long enough for the
  // prefetcher); 4 rows take it as 64-column strips, re-read from L2.
  constexpr int64_t kBlock = 256;
  const int64_t nblocks = (OC + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t o0 = blk * kBlock, width = std::min(kBlock, OC - o0);
    int64_t n = 0;
    if (width == kBlock) {
      for (; n + 4 <= N; n += 4)
        for (int64_t c = 0; c < kBlock; c += 64)
          rows_block<4, 4>(out + n * OC, inp + n * IC, w, IC, OC, o0 + c);
      for (; n + 2 <= N; n += 2)
        for (int64_t c = 0; c < kBlock; c += 128)
          rows_block<2, 8>(out + n * OC, inp + n * IC, w, IC, OC, o0 + c);
      for (; n < N; ++n) rows_block<1, 16>(out + n * OC, inp + n * IC, w, IC, OC, o0);
      continue;
    }
    const int64_t w64 = width / 64 * 64;  // ragged last block: 64-column strips, then scalars
    for (; n < N; ++n) {
      for (int64_t c = 0; c < w64; c += 64)
        rows_block<1, 4>(out + n * OC, inp + n * IC, w, IC, OC, o0 + c);
      for (int64_t j = w64; j < width; ++j) {
        float acc = 0.0f;
        for (int64_t i = 0; i < IC; ++i) acc += inp[n * IC + i] * w[i * OC + o0 + j];
        out[n * OC + o0 + j] = acc;
      }
    }
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

namespace {

// OpenBLAS core names (any case) whose kernels use neither AVX2 nor AVX-512.
bool pre_avx2_core(std::string_view name) {
  for (const char* old : {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Atom",
                          "Sandybridge", "Katmai", "Coppermine", "Northwood", "Banias",
                          "Opteron", "Opteron_SSE3", "Barcelona", "Bobcat", "Bulldozer",
                          "Piledriver", "Steamroller", "Excavator", "Generic", "Unknown"})
    if (name.size() == std::strlen(old) && strncasecmp(name.data(), old, name.size()) == 0)
      return true;
  return false;
}

// Before OpenBLAS is loaded: unless OPENBLAS_CORETYPE names a core with AVX2 or better, name the
// one cpuid supports (see matmul.h).
void choose_blas_core() {
  const char* set = std::getenv("OPENBLAS_CORETYPE");
  if (set != nullptr && !pre_avx2_core(set)) return;
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (avx512 || avx2) setenv("OPENBLAS_CORETYPE", avx512 ? "SkylakeX" : "Haswell", 1);
}

// The OpenBLAS functions llmft calls, from the library loaded at the first call.
struct OpenBlas {
  decltype(&cblas_sgemm) sgemm;
  decltype(&openblas_get_corename) corename;
  decltype(&openblas_get_num_threads) get_threads;
  decltype(&openblas_set_num_threads) set_threads;
};

const OpenBlas& openblas() {
  static const OpenBlas lib = [] {
    choose_blas_core();
    void* h = dlopen(LLMFT_OPENBLAS_LIB, RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) {
      throw Error(fmt::format("cannot load OpenBLAS: {}", dlerror()),
                  "install Debian's libopenblas0-openmp (README, first command)");
    }
    const auto sym = [h](const char* name) {
      void* f = dlsym(h, name);
      if (f == nullptr) throw Error(fmt::format("{}: has no {}", LLMFT_OPENBLAS_LIB, name));
      return f;
    };
    return OpenBlas{reinterpret_cast<decltype(&cblas_sgemm)>(sym("cblas_sgemm")),
                    reinterpret_cast<decltype(&openblas_get_corename)>(sym("openblas_get_corename")),
                    reinterpret_cast<decltype(&openblas_get_num_threads)>(
                        sym("openblas_get_num_threads")),
                    reinterpret_cast<decltype(&openblas_set_num_threads)>(
                        sym("openblas_set_num_threads"))};
  }();
  return lib;
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  openblas().sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                   trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C,
                   ldc);
}

const char* blas_kernels() {
  const char* name = openblas().corename();
  return name != nullptr ? name : "unknown";
}

ScopedThreads::ScopedThreads(int n)
    : omp_(omp_get_max_threads()), blas_(openblas().get_threads()) {
  LLMFT_CHECK(n >= 0, "threads {}", n);
  if (n == 0) return;
  omp_set_num_threads(n);
  openblas().set_threads(n);
}

ScopedThreads::~ScopedThreads() {
  // OpenBLAS built for OpenMP sets OpenMP's count too (to its own, which may differ when another
  // OpenMP runtime served its start): OpenMP's is restored last.
  openblas().set_threads(blas_);
  omp_set_num_threads(omp_);
}

void matmul_forward(std::span<float> out, std::span<const float> inp, std::span<const float> w,
                    std::span<const float> bias, int64_t N, int64_t IC, int64_t OC,
                    WeightLayout layout) {
  check_size(out, N * OC, "matmul out");
  check_size(inp, N * IC, "matmul inp");
  check_size(w, IC * OC, "matmul w");
  if (!bias.empty()) check_size(bias, OC, "matmul bias");
  if (N == 0) return;
  if (N <= kSmallRows && bias.empty()) {
    small_matmul(out.data(), inp.data(), w.data(), N, IC, OC, layout);
    return;
  }
  const float beta = init_with_bias(out, bias, N, OC);
  if (layout == WeightLayout::kInOut) {
    // out (N, OC) += inp (N, IC) @ W (IC, OC)
    sgemm(false, false, N, OC, IC, inp.data(), IC, w.data(), OC, beta, out.data(), OC);
  } else {
    // out (N, OC) += inp (N, IC) @ W^T, W (OC, IC)
    sgemm(false, true, N, OC, IC, inp.data(), IC, w.data(), IC, beta, out.data(), OC);
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
    sgemm(false, in_out, N, IC, OC, dout.data(), OC, w.data(), in_out ? OC : IC, 1.0f,
          dinp.data(), IC);
  }
  if (!dw.empty()) {
    check_size(dw, IC * OC, "matmul dw");
    check_size(inp, N * IC, "matmul inp");
    if (in_out) {
      // dW (IC, OC) += inp^T (IC, N) @ dout (N, OC)
      sgemm(true, false, IC, OC, N, inp.data(), IC, dout.data(), OC, 1.0f, dw.data(), OC);
    } else {
      // dW (OC, IC) += dout^T (OC, N) @ inp (N, IC)
      sgemm(true, false, OC, IC, N, dout.data(), OC, inp.data(), IC, 1.0f, dw.data(), IC);
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
