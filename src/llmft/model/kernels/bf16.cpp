// fp32 <-> bf16 conversion (round to nearest even, as torch's .to(torch.bfloat16)) and the bf16
// gemm: oneDNN's matmul (brgemm with AVX512-BF16 or AMX) when the CPU has native bf16 products,
// else fp32 widening + OpenBLAS sgemm. Both give exact products accumulated in fp32.
#include "llmft/model/kernels/bf16.h"

// GCC 12's AVX-512 shift intrinsics start from _mm512_undefined_epi32(), which
// -Wmaybe-uninitialized reports falsely (GCC bug 105593).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/matmul.h"

namespace llmft::kernels {

// ---------------------------------------------------------------------------------------------
// Conversion

namespace {

// Work below which conversion stays single-threaded (a parallel region costs a few us).
constexpr int64_t kConvertParallelMin = 1 << 16;

#ifdef __AVX512F__
// The same rounding as float_to_bf16 in integer AVX-512F, 16 lanes.
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

#ifdef __AVX512BF16__
// Lanes holding a denormal (zero exponent, non-zero mantissa).
inline __mmask16 denormals(__m512 x) {
  const __m512i u = _mm512_castps_si512(x);
  return _mm512_kandn(_mm512_test_epi32_mask(u, _mm512_set1_epi32(0x7f800000)),
                      _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x7fffffff)));
}
#endif

void to_bf16_range(bf16* out, const float* in, int64_t n) {
  int64_t i = 0;
#ifdef __AVX512BF16__
  // VCVTNE2PS2BF16 rounds the same way (ties to even, NaN made quiet the same way) but flushes
  // denormal inputs to zero, unlike torch: blocks holding one take the integer path. 1.2-1.5x
  // the integer path's throughput.
  for (; i + 32 <= n; i += 32) {
    const __m512 lo = _mm512_loadu_ps(in + i), hi = _mm512_loadu_ps(in + i + 16);
    if (_mm512_kortestz(denormals(lo), denormals(hi))) {
      _mm512_storeu_si512(out + i, reinterpret_cast<__m512i>(_mm512_cvtne2ps_pbh(hi, lo)));
    } else {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), cvt16(lo));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i + 16), cvt16(hi));
    }
  }
#endif
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
    // oneDNN's own view (it honours ONEDNN_MAX_CPU_ISA): AVX512-BF16 or better (AMX).
    const auto isa = static_cast<unsigned>(dnnl::get_effective_cpu_isa());
    const auto need = static_cast<unsigned>(dnnl::cpu_isa::avx512_core_bf16);
    return __builtin_cpu_supports("avx512bf16") != 0 && (isa & need) == need;
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
        sgemm(trans_a, trans_b, mb, nb, kb, a32, a_cols, b32, b_cols, blk_beta, C + m0 * ldc + n0,
              ldc);
      }
    }
  }
}

// Portable path for few rows (generation): op(A) widened once, B read in bf16 and widened a
// block at a time into a small local buffer. For M this small the product is bound by reading
// B, and bf16 halves sgemm's bytes. Faster than the blocked path (one thread, M x 3072 x 1024,
// bench load ~5) for M <= 4 with B transposed (0.27 vs 0.93 ms at M = 1) and for M = 1 without
// (0.72 vs 0.91 ms: its column loop reloads the accumulators, so more rows lose).
constexpr int64_t kSmallM = 4;
bool use_small_m(bool trans_b, int64_t M) { return M <= (trans_b ? kSmallM : 1); }

void gemm_portable_small_m(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                           const bf16* A, int64_t lda, const bf16* B, int64_t ldb, float beta,
                           float* C, int64_t ldc) {
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(M * K));
  float* a32 = scratch.data();  // op(A) (M, K) row-major
  for (int64_t m = 0; m < M; ++m)
    for (int64_t k = 0; k < K; ++k)
      a32[m * K + k] = bf16_to_float(trans_a ? A[k * lda + m] : A[m * lda + k]);
  const bool parallel = M * N * K >= (int64_t{1} << 20);
  constexpr int64_t kBlock = 256;
  if (!trans_b) {
    // C[m, n0:n1] (+)= sum_k A[m, k] B[k, n0:n1]; threads split the columns.
    const int64_t nblocks = (N + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      const int64_t n0 = blk * kBlock, nb = std::min(kBlock, N - n0);
      float acc[kSmallM][kBlock], bw[kBlock];
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < nb; ++j) acc[m][j] = beta == 0.0f ? 0.0f : C[m * ldc + n0 + j];
      for (int64_t k = 0; k < K; ++k) {
        from_bf16_range(bw, B + k * ldb + n0, nb);
        for (int64_t m = 0; m < M; ++m) {
          const float a = a32[m * K + k];
          float* acc_m = acc[m];
#pragma omp simd
          for (int64_t j = 0; j < nb; ++j) acc_m[j] += a * bw[j];
        }
      }
      for (int64_t m = 0; m < M; ++m) std::copy_n(acc[m], nb, C + m * ldc + n0);
    }
  } else {
    // C[m, n] (+)= dot(A[m, :], B[n, :]); threads split the columns.
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t n = 0; n < N; ++n) {
      const bf16* b = B + n * ldb;
      float acc[kSmallM] = {}, bw[kBlock];
      for (int64_t k0 = 0; k0 < K; k0 += kBlock) {
        const int64_t kb = std::min(kBlock, K - k0);
        from_bf16_range(bw, b + k0, kb);
        for (int64_t m = 0; m < M; ++m) {
          const float* a = a32 + m * K + k0;
          float s = 0.0f;
#pragma omp simd reduction(+ : s)
          for (int64_t k = 0; k < kb; ++k) s += a[k] * bw[k];
          acc[m] += s;
        }
      }
      for (int64_t m = 0; m < M; ++m)
        C[m * ldc + n] = beta == 0.0f ? acc[m] : C[m * ldc + n] + acc[m];
    }
  }
}

// Native path: oneDNN matmul primitives, one per call shape, in a small LRU cache. A primitive
// costs ~40 us to look up through oneDNN's own cache and ~0.3 ms to create; a training step makes
// ~300 products over ~15 shapes (every batch has a different token count), so cached calls
// cost only a handle swap. Each entry keeps its memory objects and argument map: a cached call
// allocates nothing. Runtime-dimension primitives would avoid the creations but run on a slow
// generic kernel in oneDNN 2.6 (bench_gemm).
class DnnlGemm {
 public:
  DnnlGemm() : engine_(dnnl::engine::kind::cpu, 0), stream_(engine_) {
    // oneDNN's own primitive cache (1024 entries, ~85 KB each) would keep a primitive for every
    // token count ever seen (~100 MB over a run); ours holds the working set, so turn it off
    // unless the user set its size.
    if (std::getenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY") == nullptr &&
        std::getenv("DNNL_PRIMITIVE_CACHE_CAPACITY") == nullptr)
      dnnl::set_primitive_cache_capacity(0);
  }

  // Returns false when oneDNN has no primitive for this case (the caller falls back).
  bool run(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const bf16* A,
           int64_t lda, const bf16* B, int64_t ldb, float beta, float* C, int64_t ldc) {
    const Key key{trans_a, trans_b, beta != 0.0f, M, N, K, lda, ldb, ldc};
    // One call at a time: entries' memory objects are shared (concurrent callers would also
    // just split the same OpenMP cores).
    std::lock_guard<std::mutex> lock(mu_);
    Entry* e = find_or_create(key);
    if (e == nullptr) return false;
    e->a.set_data_handle(const_cast<bf16*>(A));
    e->b.set_data_handle(const_cast<bf16*>(B));
    e->c.set_data_handle(C);
    e->prim.execute(stream_, e->args);
    stream_.wait();
    return true;
  }

 private:
  static constexpr size_t kCapacity = 48;

  struct Key {
    bool trans_a, trans_b, sum;
    int64_t M, N, K, lda, ldb, ldc;
    bool operator==(const Key&) const = default;
  };
  struct Entry {
    Key key;
    bool ok = false;  // false: oneDNN offered no primitive
    uint64_t last_use = 0;
    dnnl::matmul prim;
    dnnl::memory a, b, c;
    std::unordered_map<int, dnnl::memory> args;
  };

  Entry* find_or_create(const Key& key) {
    ++tick_;
    for (auto& e : entries_) {
      if (e->key == key) {
        e->last_use = tick_;
        return e->ok ? e.get() : nullptr;
      }
    }
    auto e = std::make_unique<Entry>();
    e->key = key;
    e->last_use = tick_;
    try {
      using dt = dnnl::memory::data_type;
      using dims = dnnl::memory::dims;
      // Row-major op(A) (M, K) and op(B) (K, N); a transpose is a swap of strides.
      const dnnl::memory::desc a_md({key.M, key.K}, dt::bf16,
                                    key.trans_a ? dims{1, key.lda} : dims{key.lda, 1});
      const dnnl::memory::desc b_md({key.K, key.N}, dt::bf16,
                                    key.trans_b ? dims{1, key.ldb} : dims{key.ldb, 1});
      const dnnl::memory::desc c_md({key.M, key.N}, dt::f32, dims{key.ldc, 1});
      dnnl::primitive_attr attr;
      if (key.sum) {  // beta = 1: C += A B
        dnnl::post_ops ops;
        ops.append_sum(1.0f);
        attr.set_post_ops(ops);
      }
      const dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a_md, b_md, c_md), attr, engine_);
      e->prim = dnnl::matmul(pd);
      e->a = dnnl::memory(a_md, engine_, DNNL_MEMORY_NONE);
      e->b = dnnl::memory(b_md, engine_, DNNL_MEMORY_NONE);
      e->c = dnnl::memory(c_md, engine_, DNNL_MEMORY_NONE);
      e->args = {{DNNL_ARG_SRC, e->a}, {DNNL_ARG_WEIGHTS, e->b}, {DNNL_ARG_DST, e->c}};
      e->ok = true;
    } catch (const dnnl::error&) {
      e->ok = false;
    }
    if (entries_.size() >= kCapacity) {
      auto oldest = std::min_element(entries_.begin(), entries_.end(), [](const auto& x, const auto& y) {
        return x->last_use < y->last_use;
      });
      *oldest = std::move(e);
      return (*oldest)->ok ? oldest->get() : nullptr;
    }
    entries_.push_back(std::move(e));
    return entries_.back()->ok ? entries_.back().get() : nullptr;
  }

  dnnl::engine engine_;
  dnnl::stream stream_;
  std::mutex mu_;
  std::vector<std::unique_ptr<Entry>> entries_;
  uint64_t tick_ = 0;
};

DnnlGemm& dnnl_gemm() {
  static DnnlGemm g;
  return g;
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
  if (bf16_native() &&
      dnnl_gemm().run(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc))
    return;
  if (use_small_m(trans_b, M))
    gemm_portable_small_m(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
  else
    gemm_portable(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace llmft::kernels
