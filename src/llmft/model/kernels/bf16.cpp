// fp32 <-> bf16 conversion (round to nearest even, as torch's .to(torch.bfloat16)) and the bf16
// gemm: native AVX512-BF16 products when the CPU has them, else fp32 widening + OpenBLAS sgemm.
#include "llmft/model/kernels/bf16.h"

#include <cblas.h>
// GCC 12's AVX-512 shift intrinsics start from _mm512_undefined_epi32(), which
// -Wmaybe-uninitialized reports falsely (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "llmft/model/kernels/common.h"

namespace llmft::kernels {

// ---------------------------------------------------------------------------------------------
// Conversion

bf16 float_to_bf16(float x) {
  const uint32_t u = std::bit_cast<uint32_t>(x);
  // NaN: keep sign and top payload bits, set the quiet bit so truncation cannot make it inf.
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16>((u >> 16) | 0x40u);
  // Round to nearest even: add 0x7fff plus the lowest kept bit; a carry into the exponent
  // rounds up correctly, including max finite -> inf.
  return static_cast<bf16>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

float bf16_to_float(bf16 x) { return std::bit_cast<float>(static_cast<uint32_t>(x) << 16); }

namespace {

// Work below which conversion stays single-threaded (a parallel region costs a few us).
constexpr int64_t kConvertParallelMin = 1 << 16;

#ifdef __AVX512F__
// The same rounding as float_to_bf16 in integer AVX-512F, 16 lanes. (VCVTNEPS2BF16 would be one
// instruction but flushes denormal inputs to zero, unlike torch; conversion is memory-bound,
// so the integer form costs nothing measurable.)
inline __m256i cvt16(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i rounded =
      _mm512_srli_epi32(_mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
  const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                _mm512_set1_epi32(0x7f800000));
  const __m512i quiet = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
  return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, quiet));
}
#endif

void to_bf16_range(bf16* out, const float* in, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), cvt16(_mm512_loadu_ps(in + i)));
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm256_mask_storeu_epi16(out + i, m, cvt16(_mm512_maskz_loadu_ps(m, in + i)));
    return;
  }
#endif
  for (; i < n; ++i) out[i] = float_to_bf16(in[i]);
}

void from_bf16_range(float* out, const bf16* in, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512F__
  for (; i + 16 <= n; i += 16) {
    const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(in + i)));
    _mm512_storeu_ps(out + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
  }
#endif
  for (; i < n; ++i) out[i] = bf16_to_float(in[i]);
}

// Splits [0, n) into per-thread chunks (multiples of 64 elements) when n is large.
template <typename F>
void parallel_chunks(int64_t n, F&& f) {
  if (n < kConvertParallelMin) {
    f(0, n);
    return;
  }
  const int64_t kChunk = 1 << 14;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < chunks; ++c) f(c * kChunk, std::min(n, (c + 1) * kChunk));
}

}  // namespace

void to_bf16(std::span<bf16> out, std::span<const float> in) {
  check_size(out, static_cast<int64_t>(in.size()), "to_bf16 out");
  parallel_chunks(static_cast<int64_t>(in.size()),
                  [&](int64_t a, int64_t b) { to_bf16_range(out.data() + a, in.data() + a, b - a); });
}

void from_bf16(std::span<float> out, std::span<const bf16> in) {
  check_size(out, static_cast<int64_t>(in.size()), "from_bf16 out");
  parallel_chunks(static_cast<int64_t>(in.size()), [&](int64_t a, int64_t b) {
    from_bf16_range(out.data() + a, in.data() + a, b - a);
  });
}

// ---------------------------------------------------------------------------------------------
// Backend choice

namespace {

bool cpu_native() {
  static const bool native = [] {
    const char* env = std::getenv("LLMFT_BF16_NATIVE");
    if (env != nullptr && std::strcmp(env, "0") == 0) return false;
    return __builtin_cpu_supports("avx512bf16") != 0;
  }();
  return native;
}

std::atomic<bool> g_forced_off{false};

// Portable path: widen blocks of op(A) and op(B) to fp32 (in their stored layout, so sgemm does
// the transposes) and accumulate block products with sgemm. Blocks bound the scratch to
// (kMc + kNc) * kKc floats per calling thread, whatever the shapes.
constexpr int64_t kMc = 1024, kNc = 2048, kKc = 512;

void gemm_portable(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A,
                   int64_t lda, const bf16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  thread_local std::vector<float> scratch;
  scratch.resize((kMc + kNc) * kKc);
  float* a32 = scratch.data();
  float* b32 = scratch.data() + kMc * kKc;
  for (int64_t m0 = 0; m0 < M; m0 += kMc) {
    const int64_t mb = std::min(kMc, M - m0);
    for (int64_t k0 = 0; k0 < K; k0 += kKc) {
      const int64_t kb = std::min(kKc, K - k0);
      // op(A) block (mb, kb): stored (mb, kb) at A[m0, k0], or (kb, mb) at A[k0, m0].
      const int64_t a_rows = trans_a ? kb : mb, a_cols = trans_a ? mb : kb;
      const bf16* a_src = trans_a ? A + k0 * lda + m0 : A + m0 * lda + k0;
      for (int64_t r = 0; r < a_rows; ++r) from_bf16_range(a32 + r * a_cols, a_src + r * lda, a_cols);
      for (int64_t n0 = 0; n0 < N; n0 += kNc) {
        const int64_t nb = std::min(kNc, N - n0);
        // op(B) block (kb, nb): stored (kb, nb) at B[k0, n0], or (nb, kb) at B[n0, k0].
        const int64_t b_rows = trans_b ? nb : kb, b_cols = trans_b ? kb : nb;
        const bf16* b_src = trans_b ? B + n0 * ldb + k0 : B + k0 * ldb + n0;
        parallel_chunks(b_rows * b_cols, [&](int64_t a, int64_t b) {
          // Chunks are element ranges of the (b_rows, b_cols) block; walk them row by row.
          for (int64_t e = a; e < b;) {
            const int64_t r = e / b_cols, c = e % b_cols, len = std::min(b - e, b_cols - c);
            from_bf16_range(b32 + r * b_cols + c, b_src + r * ldb + c, len);
            e += len;
          }
        });
        const float blk_beta = k0 == 0 ? beta : 1.0f;
        cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                    trans_b ? CblasTrans : CblasNoTrans, mb, nb, kb, 1.0f, a32, a_cols, b32, b_cols,
                    blk_beta, C + m0 * ldc + n0, ldc);
      }
    }
  }
}

}  // namespace

bool bf16_native() { return cpu_native() && !g_forced_off.load(std::memory_order_relaxed); }

void set_bf16_native(bool enabled) { g_forced_off.store(!enabled, std::memory_order_relaxed); }

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A,
               int64_t lda, const bf16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  LLMFT_CHECK(M >= 0 && N >= 0 && K >= 0, "gemm_bf16: negative size M={} N={} K={}", M, N, K);
  LLMFT_CHECK(beta == 0.0f || beta == 1.0f, "gemm_bf16: beta must be 0 or 1, got {}", beta);
  LLMFT_CHECK(lda >= (trans_a ? M : K) && ldb >= (trans_b ? K : N) && ldc >= N,
              "gemm_bf16: leading dimension too small (lda={} ldb={} ldc={})", lda, ldb, ldc);
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (beta == 0.0f)
      for (int64_t i = 0; i < M; ++i) std::fill_n(C + i * ldc, N, 0.0f);
    return;
  }
  gemm_portable(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace llmft::kernels
