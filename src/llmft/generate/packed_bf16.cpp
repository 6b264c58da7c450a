// Packed bf16 weights and the decoder's bf16 matmul; see packed_bf16.h.
#include "llmft/generate/packed_bf16.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "llmft/core/error.h"

namespace llmft {

namespace k = kernels;

PackedBf16::PackedBf16(std::span<const float> w, int64_t K, int64_t N, k::WeightLayout layout)
    : K_(K), N_(N), K2_((K + 1) / 2) {
  LLMFT_CHECK(K >= 1 && N >= 1 && static_cast<int64_t>(w.size()) >= K * N,
              "PackedBf16: {} floats for K={} N={}", w.size(), K, N);
  const auto n = static_cast<size_t>(bytes());
  data_.reset(static_cast<k::bf16*>(std::aligned_alloc(64, (n + 63) / 64 * 64)));
  if (!data_) throw std::bad_alloc();
  const bool in_out = layout == k::WeightLayout::kInOut;
  const float* src = w.data();
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < panels(); ++p) {
    k::bf16* dst = data_.get() + p * K2_ * kPanel * 2;  // (K2, 64, 2)
    for (int64_t kp = 0; kp < K2_; ++kp) {
      for (int64_t j = 0; j < kPanel; ++j) {
        const int64_t col = p * kPanel + j;
        for (int64_t e = 0; e < 2; ++e) {
          const int64_t row = 2 * kp + e;
          float v = 0.0f;
          if (col < N && row < K) v = in_out ? src[row * N + col] : src[col * K + row];
          dst[(kp * kPanel + j) * 2 + e] = k::float_to_bf16(v);
        }
      }
    }
  }
}

void round_rows_bf16(std::span<k::bf16> a, std::span<const float> x, int64_t M, int64_t K) {
  const int64_t ld = bf16_row_stride(K);
  LLMFT_CHECK(static_cast<int64_t>(a.size()) >= M * ld && static_cast<int64_t>(x.size()) >= M * K,
              "round_rows_bf16: spans too small for M={} K={}", M, K);
  if (ld == K) {
    k::to_bf16(a.subspan(0, static_cast<size_t>(M * K)), x.subspan(0, static_cast<size_t>(M * K)));
    return;
  }
  for (int64_t r = 0; r < M; ++r) {
    k::to_bf16(a.subspan(static_cast<size_t>(r * ld), static_cast<size_t>(K)),
               x.subspan(static_cast<size_t>(r * K), static_cast<size_t>(K)));
    a[static_cast<size_t>(r * ld + K)] = 0;
  }
}

namespace {

constexpr int64_t kPanel = PackedBf16::kPanel;
// Rows per register tile: R x 4 accumulators of 16 floats.
constexpr int kRows = 6;

#if defined(__AVX512BF16__)

// out[r, 0:cols] = a[r, :] @ panel + bias for r < R; the panel's 64 columns in 4 vectors.
template <int R>
inline void tile(float* out, int64_t ldo, const k::bf16* a, int64_t lda, const k::bf16* panel,
                 int64_t K2, const float* bias, int64_t cols) {
  __m512 acc[R][4];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) acc[r][q] = _mm512_setzero_ps();
  for (int64_t kp = 0; kp < K2; ++kp) {
    const k::bf16* w = panel + kp * kPanel * 2;  // (64, 2)
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
    const int64_t c0 = 16 * q;
    if (c0 >= cols) break;
    const __mmask16 m = cols - c0 >= 16 ? static_cast<__mmask16>(0xffff)
                                        : static_cast<__mmask16>((1u << (cols - c0)) - 1);
    const __m512 bv = bias ? _mm512_maskz_loadu_ps(m, bias + c0) : _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
      _mm512_mask_storeu_ps(out + r * ldo + c0, m, _mm512_add_ps(acc[r][q], bv));
  }
}

#else

// Portable: the same products (bf16 values are exact in fp32), summed pair by pair in fp32.
template <int R>
inline void tile(float* out, int64_t ldo, const k::bf16* a, int64_t lda, const k::bf16* panel,
                 int64_t K2, const float* bias, int64_t cols) {
  auto f = [](k::bf16 v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float x;
    std::memcpy(&x, &u, sizeof x);
    return x;
  };
  for (int r = 0; r < R; ++r) {
    float acc[kPanel] = {};
    for (int64_t kp = 0; kp < K2; ++kp) {
      const k::bf16* w = panel + kp * kPanel * 2;
      const float a0 = f(a[r * lda + 2 * kp]), a1 = f(a[r * lda + 2 * kp + 1]);
      for (int64_t j = 0; j < kPanel; ++j) acc[j] += a0 * f(w[2 * j]) + a1 * f(w[2 * j + 1]);
    }
    for (int64_t j = 0; j < cols; ++j) out[r * ldo + j] = acc[j] + (bias ? bias[j] : 0.0f);
  }
}

#endif

// Rows [0, M) of one panel, kRows at a time.
void panel_rows(float* out, int64_t ldo, const k::bf16* a, int64_t lda, const k::bf16* panel,
                int64_t K2, const float* bias, int64_t cols, int64_t M) {
  int64_t r = 0;
  for (; r + kRows <= M; r += kRows)
    tile<kRows>(out + r * ldo, ldo, a + r * lda, lda, panel, K2, bias, cols);
  float* o = out + r * ldo;
  const k::bf16* ar = a + r * lda;
  switch (M - r) {
    case 5: tile<5>(o, ldo, ar, lda, panel, K2, bias, cols); break;
    case 4: tile<4>(o, ldo, ar, lda, panel, K2, bias, cols); break;
    case 3: tile<3>(o, ldo, ar, lda, panel, K2, bias, cols); break;
    case 2: tile<2>(o, ldo, ar, lda, panel, K2, bias, cols); break;
    case 1: tile<1>(o, ldo, ar, lda, panel, K2, bias, cols); break;
    default: break;
  }
}

}  // namespace

void bf16_linear(std::span<float> out, std::span<const k::bf16> a, const PackedBf16& w,
                 std::span<const float> bias, int64_t M) {
  const int64_t K = w.in(), N = w.out(), K2 = w.pairs(), lda = bf16_row_stride(K);
  LLMFT_CHECK(static_cast<int64_t>(out.size()) >= M * N && static_cast<int64_t>(a.size()) >= M * lda &&
                  (bias.empty() || static_cast<int64_t>(bias.size()) >= N),
              "bf16_linear: spans too small for M={} K={} N={}", M, K, N);
  if (M <= 0) return;
  const int64_t P = w.panels();
  float* o = out.data();
  const k::bf16* ap = a.data();
  const float* bp = bias.empty() ? nullptr : bias.data();
  // A panel is K x 64 products per row; below ~32k of them a parallel region costs more.
#pragma omp parallel for schedule(static) if (M * K * N >= (int64_t{1} << 21))
  for (int64_t p = 0; p < P; ++p) {
    const int64_t c0 = p * kPanel, cols = std::min(kPanel, N - c0);
    panel_rows(o + c0, N, ap, lda, w.panel(p), K2, bp ? bp + c0 : nullptr, cols, M);
  }
}

}  // namespace llmft
