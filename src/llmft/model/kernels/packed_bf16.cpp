// Packed bf16 weights and the generation bf16 matmul; see packed_bf16.h.
#include "llmft/model/kernels/packed_bf16.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "llmft/core/error.h"

namespace llmft::kernels {

PackedBf16::PackedBf16(std::span<const float> w, int64_t K, int64_t N, WeightLayout layout)
    : K_(K), N_(N), K2_((K + 1) / 2) {
  LLMFT_CHECK(K >= 1 && N >= 1 && static_cast<int64_t>(w.size()) >= K * N,
              "PackedBf16: {} floats for K={} N={}", w.size(), K, N);
  const auto n = static_cast<size_t>(bytes());
  data_.reset(static_cast<bf16*>(std::aligned_alloc(64, (n + 63) / 64 * 64)));
  if (!data_) throw std::bad_alloc();
  // Rounded a source row at a time (contiguous, vectorised), then scattered into the panels.
  const int64_t P = panels();
  if (layout == WeightLayout::kInOut) {  // src row k = input k, N columns
#pragma omp parallel
    {
      std::vector<bf16> row(static_cast<size_t>(N));
#pragma omp for schedule(static)
      for (int64_t i = 0; i < 2 * K2_; ++i) {
        if (i < K) to_bf16(row, w.subspan(static_cast<size_t>(i * N), static_cast<size_t>(N)));
        else std::fill(row.begin(), row.end(), bf16{0});
        const int64_t kp = i / 2, e = i % 2;
        for (int64_t p = 0; p < P; ++p) {
          bf16* dst = data_.get() + (p * K2_ + kp) * kPanel * 2 + e;
          for (int64_t j = 0; j < kPanel; ++j) {
            const int64_t col = p * kPanel + j;
            dst[2 * j] = col < N ? row[static_cast<size_t>(col)] : bf16{0};
          }
        }
      }
    }
  } else {  // src row n = output n, K inputs
#pragma omp parallel
    {
      std::vector<bf16> row(static_cast<size_t>(2 * K2_), 0);
#pragma omp for schedule(static)
      for (int64_t col = 0; col < P * kPanel; ++col) {
        if (col < N)
          to_bf16(std::span(row).subspan(0, static_cast<size_t>(K)),
                     w.subspan(static_cast<size_t>(col * K), static_cast<size_t>(K)));
        else std::fill(row.begin(), row.end(), bf16{0});
        bf16* dst = data_.get() + (col / kPanel * K2_ * kPanel + col % kPanel) * 2;
        for (int64_t kp = 0; kp < K2_; ++kp) {
          dst[kp * kPanel * 2] = row[static_cast<size_t>(2 * kp)];
          dst[kp * kPanel * 2 + 1] = row[static_cast<size_t>(2 * kp + 1)];
        }
      }
    }
  }
}

void round_rows_bf16(std::span<bf16> a, std::span<const float> x, int64_t M, int64_t K) {
  const int64_t ld = bf16_row_stride(K);
  LLMFT_CHECK(static_cast<int64_t>(a.size()) >= M * ld && static_cast<int64_t>(x.size()) >= M * K,
              "round_rows_bf16: spans too small for M={} K={}", M, K);
  if (ld == K) {
    to_bf16(a.subspan(0, static_cast<size_t>(M * K)), x.subspan(0, static_cast<size_t>(M * K)));
    return;
  }
  for (int64_t r = 0; r < M; ++r) {
    to_bf16(a.subspan(static_cast<size_t>(r * ld), static_cast<size_t>(K)),
               x.subspan(static_cast<size_t>(r * K), static_cast<size_t>(K)));
    a[static_cast<size_t>(r * ld + K)] = 0;
  }
}

namespace {

constexpr int64_t kPanel = PackedBf16::kPanel;
// Rows per register tile: R x 4 accumulators of 16 floats.
constexpr int kRows = 6;

// Two versions of the kernel, chosen at run time by bf16_native() (bf16.h: the CPU's AVX512-BF16,
// or LLMFT_BF16_NATIVE=0), so one binary runs on any x86-64 CPU and takes the fast path where it
// exists. The native one is compiled for AVX512-BF16 whatever the build's -march.
#define LLMFT_TARGET_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

// out[r, 0:cols] (+)= a[r, pairs 0:K2] @ panel (+ bias) for r < R; the panel's 64 columns in 4
// vectors. `first`: start from zero, else continue the sums already in out (exact: fp32 stored
// and reloaded); bias (or null) is added by the last piece.
template <int R>
LLMFT_TARGET_BF16 void tile_native(float* out, int64_t ldo, const bf16* a, int64_t lda,
                                          const bf16* panel, int64_t K2, const float* bias,
                                          int64_t cols, bool first) {
  __m512 acc[R][4];
  __mmask16 mask[4];
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const int64_t left = cols - 16 * q;
    mask[q] = left >= 16 ? static_cast<__mmask16>(0xffff)
                         : static_cast<__mmask16>(left <= 0 ? 0u : (1u << left) - 1);
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q)
      acc[r][q] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[q], out + r * ldo + 16 * q);
  for (int64_t kp = 0; kp < K2; ++kp) {
    const bf16* w = panel + kp * kPanel * 2;  // (64, 2)
    __m512bh b[4];
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) b[q] = (__m512bh)_mm512_load_si512(w + 32 * q);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      int32_t pair;
      std::memcpy(&pair, a + r * lda + 2 * kp, sizeof pair);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) acc[r][q] = _mm512_dpbf16_ps(acc[r][q], av, b[q]);
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(mask[q], bias + 16 * q) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(out + r * ldo + 16 * q, mask[q], _mm512_add_ps(acc[r][q], bv));
  }
}

// Portable: the same products (bf16 values are exact in fp32), summed pair by pair in fp32.
template <int R>
inline void tile_portable(float* out, int64_t ldo, const bf16* a, int64_t lda, const bf16* panel,
                          int64_t K2, const float* bias, int64_t cols, bool first) {
  auto f = bf16_to_float;
  for (int r = 0; r < R; ++r) {
    float acc[kPanel] = {};
    if (!first)
      for (int64_t j = 0; j < cols; ++j) acc[j] = out[r * ldo + j];
    for (int64_t kp = 0; kp < K2; ++kp) {
      const bf16* w = panel + kp * kPanel * 2;
      const float a0 = f(a[r * lda + 2 * kp]), a1 = f(a[r * lda + 2 * kp + 1]);
      for (int64_t j = 0; j < kPanel; ++j) acc[j] += a0 * f(w[2 * j]) + a1 * f(w[2 * j + 1]);
    }
    for (int64_t j = 0; j < cols; ++j) out[r * ldo + j] = acc[j] + (bias ? bias[j] : 0.0f);
  }
}

// Input pairs per piece of a panel: 128 x 64 x 2 bf16 = 32 KB, kept in L1 while every row tile
// streams past it (a whole K=4096 panel is 512 KB and would come from L2/L3 for each tile).
constexpr int64_t kPairsPerPiece = 128;

// One tile of R rows, native or portable (the native one is not inlined here: it is compiled
// for another target; a call per tile of R x 128 pairs costs little).
template <bool kNative, int R>
inline void tile(float* out, int64_t ldo, const bf16* a, int64_t lda, const bf16* panel,
                 int64_t K2, const float* bias, int64_t cols, bool first) {
  if constexpr (kNative) tile_native<R>(out, ldo, a, lda, panel, K2, bias, cols, first);
  else tile_portable<R>(out, ldo, a, lda, panel, K2, bias, cols, first);
}

// Rows [0, M) of one panel, kRows at a time, in pieces of kPairsPerPiece input pairs.
template <bool kNative>
void panel_rows(float* out, int64_t ldo, const bf16* a, int64_t lda, const bf16* panel,
                int64_t K2, const float* bias, int64_t cols, int64_t M) {
  for (int64_t k0 = 0; k0 < K2; k0 += kPairsPerPiece) {
    const int64_t np = std::min(kPairsPerPiece, K2 - k0);
    const bool first = k0 == 0;
    const float* b = k0 + np == K2 ? bias : nullptr;
    const bf16* pp = panel + k0 * kPanel * 2;
    const bf16* ap = a + 2 * k0;
    int64_t r = 0;
    for (; r + kRows <= M; r += kRows)
      tile<kNative, kRows>(out + r * ldo, ldo, ap + r * lda, lda, pp, np, b, cols, first);
    float* o = out + r * ldo;
    const bf16* ar = ap + r * lda;
    switch (M - r) {
      case 5: tile<kNative, 5>(o, ldo, ar, lda, pp, np, b, cols, first); break;
      case 4: tile<kNative, 4>(o, ldo, ar, lda, pp, np, b, cols, first); break;
      case 3: tile<kNative, 3>(o, ldo, ar, lda, pp, np, b, cols, first); break;
      case 2: tile<kNative, 2>(o, ldo, ar, lda, pp, np, b, cols, first); break;
      case 1: tile<kNative, 1>(o, ldo, ar, lda, pp, np, b, cols, first); break;
      default: break;
    }
  }
}

}  // namespace

void bf16_linear(std::span<float> out, std::span<const bf16> a, const PackedBf16& w,
                 std::span<const float> bias, int64_t M) {
  const int64_t K = w.in(), N = w.out(), K2 = w.pairs(), lda = bf16_row_stride(K);
  LLMFT_CHECK(static_cast<int64_t>(out.size()) >= M * N && static_cast<int64_t>(a.size()) >= M * lda &&
                  (bias.empty() || static_cast<int64_t>(bias.size()) >= N),
              "bf16_linear: spans too small for M={} K={} N={}", M, K, N);
  if (M <= 0) return;
  const int64_t P = w.panels();
  const bool native = bf16_native();
  float* o = out.data();
  const bf16* ap = a.data();
  const float* bp = bias.empty() ? nullptr : bias.data();
  // A panel is K x 64 products per row; below ~32k of them a parallel region costs more.
#pragma omp parallel for schedule(static) if (M * K * N >= (int64_t{1} << 21))
  for (int64_t p = 0; p < P; ++p) {
    const int64_t c0 = p * kPanel, cols = std::min(kPanel, N - c0);
    const float* bc = bp ? bp + c0 : nullptr;
    if (native) panel_rows<true>(o + c0, N, ap, lda, w.panel(p), K2, bc, cols, M);
    else panel_rows<false>(o + c0, N, ap, lda, w.panel(p), K2, bc, cols, M);
  }
}

}  // namespace llmft::kernels
