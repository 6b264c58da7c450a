// Attention over a KV cache; see attention_cached.h. Each task is a row's heads (or a group of
// them when there are few rows, so a single stream still uses every thread); every loop's length
// depends only on the row's position, which keeps rows independent of each other.
#include "llmft/model/kernels/attention_cached.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/vmath.h"

namespace llmft::kernels {

KvCache::KvCache(int64_t B, int64_t L, int64_t Tcap, int64_t C, bool use_bf16)
    : B_(B), L_(L), Tcap_(Tcap), C_(C) {
  LLMFT_CHECK(B >= 1 && L >= 1 && Tcap >= 1 && C >= 1, "KV cache B={} L={} Tcap={} C={}", B, L,
              Tcap, C);
  const auto n = static_cast<size_t>(B * L * 2 * Tcap * C);
  if (use_bf16) b_ = std::make_unique_for_overwrite<bf16[]>(n);
  else f_ = std::make_unique_for_overwrite<float[]>(n);
}

template <typename T>
T* KvCache::at(int64_t stream, int64_t l, int kind) const {
  const int64_t off = ((stream * L_ + l) * 2 + kind) * Tcap_ * C_;
  if constexpr (std::is_same_v<T, float>) return f_.get() + off;
  else return b_.get() + off;
}
template float* KvCache::at<float>(int64_t, int64_t, int) const;
template bf16* KvCache::at<bf16>(int64_t, int64_t, int) const;

int64_t attention_cached_scratch_size(int64_t threads, int64_t NH, int64_t Tcap) {
  return threads * NH * Tcap;
}

namespace {

inline float widen(float x) { return x; }
inline float widen(bf16 x) { return bf16_to_float(x); }

// Heads [h0, h1) of one row at position n - 1: for each head h,
//   y_h (HS) = softmax(q_h . k_{t,h} / sqrt(HS), t < n) @ v_{t,h}
// q, y: the row's (C); kc, vc: the stream's cached (n, C) keys and values (position-major, so
// each pass streams one contiguous run of memory); sc: ((h1 - h0) * n) scratch. Every head sums
// in the same order whatever [h0, h1) is. HS = 16 NC takes vector registers; NC = 0: any HS.
template <int NC, typename T>
void attend_heads(float* y, const float* q, const T* kc, const T* vc, int64_t n, int64_t C,
                  int64_t HS, int64_t h0, int64_t h1, float scale, float* sc) {
  if constexpr (NC > 0) HS = 16 * NC;
  const int64_t H = h1 - h0;
  // The keys and values are read once, from memory: prefetch a few positions ahead.
  constexpr int64_t kAhead = 4;
  const int64_t lo = h0 * HS * static_cast<int64_t>(sizeof(T)),
                hi = h1 * HS * static_cast<int64_t>(sizeof(T));
  auto prefetch = [&](const T* row) {
    for (int64_t b = lo; b < hi; b += 64) __builtin_prefetch(reinterpret_cast<const char*>(row) + b);
  };
  for (int64_t t = 0; t < n; ++t) {
    const T* kt = kc + t * C;
    if (t + kAhead < n) prefetch(kt + kAhead * C);
    for (int64_t h = h0; h < h1; ++h) {
      float d;
      if constexpr (NC > 0) {
        f32x16 acc{}, qv, kv;
        for (int c = 0; c < NC; ++c) {
          load16(qv, q + h * HS + 16 * c);
          load16(kv, kt + h * HS + 16 * c);
          acc += qv * kv;
        }
        d = hsum(acc);
      } else {
        d = 0.0f;
        for (int64_t i = 0; i < HS; ++i) d += q[h * HS + i] * widen(kt[h * HS + i]);
      }
      sc[(h - h0) * n + t] = d * scale;
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    float* s = sc + h * n;
    float maxv = -INFINITY;
    for (int64_t t = 0; t < n; ++t) maxv = std::max(maxv, s[t]);
    const float inv = 1.0f / exp_shifted(s, n, maxv);
#pragma omp simd
    for (int64_t t = 0; t < n; ++t) s[t] *= inv;
  }
  std::fill(y + h0 * HS, y + h1 * HS, 0.0f);
  for (int64_t t = 0; t < n; ++t) {
    const T* vt = vc + t * C;
    if (t + kAhead < n) prefetch(vt + kAhead * C);
    for (int64_t h = h0; h < h1; ++h) {
      const float w = sc[(h - h0) * n + t];
      float* yh = y + h * HS;
      if constexpr (NC > 0) {
        for (int c = 0; c < NC; ++c) {
          f32x16 acc, vv;
          load16(acc, yh + 16 * c);
          load16(vv, vt + h * HS + 16 * c);
          acc += w * vv;
          store16(yh + 16 * c, acc);
        }
      } else {
        for (int64_t i = 0; i < HS; ++i) yh[i] += w * widen(vt[h * HS + i]);
      }
    }
  }
}

template <typename T>
void attend(float* y, const float* q, const T* kc, const T* vc, int64_t n, int64_t C, int64_t HS,
            int64_t h0, int64_t h1, float scale, float* sc) {
  switch (HS) {
    case 64: attend_heads<4>(y, q, kc, vc, n, C, HS, h0, h1, scale, sc); break;  // every GPT-2
    case 32: attend_heads<2>(y, q, kc, vc, n, C, HS, h0, h1, scale, sc); break;
    case 16: attend_heads<1>(y, q, kc, vc, n, C, HS, h0, h1, scale, sc); break;
    default: attend_heads<0>(y, q, kc, vc, n, C, HS, h0, h1, scale, sc); break;
  }
}

inline void store(float* dst, const float* src, int64_t n) { std::copy_n(src, n, dst); }
inline void store(bf16* dst, const float* src, int64_t n) {
  to_bf16({dst, static_cast<size_t>(n)}, {src, static_cast<size_t>(n)});
}

template <typename T>
void cached_forward(std::span<float> out, std::span<bf16> out_bf, std::span<float> qkv,
                    std::span<const float> bias, const KvCache& cache, int64_t l,
                    std::span<const int64_t> stream, std::span<const int32_t> pos,
                    std::span<float> scratch, int64_t N, int64_t C, int64_t NH) {
  const int64_t HS = C / NH, Tcap = cache.capacity();
  // qkv += bias; the new keys and values at their positions.
#pragma omp parallel for if (N * C >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    float* row = qkv.data() + r * 3 * C;  // (3C) = [q | k | v]
#pragma omp simd
    for (int64_t i = 0; i < 3 * C; ++i) row[i] += bias[i];
    const int64_t s = stream[r], p = pos[r];
    store(cache.at<T>(s, l, 0) + p * C, row + C, C);
    store(cache.at<T>(s, l, 1) + p * C, row + 2 * C, C);
  }
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const int64_t threads = omp_get_max_threads();
  const int64_t groups = N >= 4 * threads ? 1 : std::min<int64_t>(NH, 4 * threads);
  const int64_t per = (NH + groups - 1) / groups;
  int64_t work = 0;
  for (int64_t r = 0; r < N; ++r) work += (pos[r] + 1) * C;
#pragma omp parallel for collapse(2) schedule(dynamic) if (work >= kParallelMin)
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t h0 = g * per, h1 = std::min(NH, h0 + per);
      if (h0 >= h1) continue;
      const int64_t s = stream[r], p = pos[r];
      float* sc = scratch.data() + static_cast<int64_t>(omp_get_thread_num()) * NH * Tcap;
      attend(out.data() + r * C, qkv.data() + r * 3 * C, cache.at<T>(s, l, 0),
             cache.at<T>(s, l, 1), p + 1, C, HS, h0, h1, scale, sc);
      if (!out_bf.empty()) {  // the projection's input, rounded here
        to_bf16(out_bf.subspan(static_cast<size_t>(r * C + h0 * HS),
                               static_cast<size_t>((h1 - h0) * HS)),
                out.subspan(static_cast<size_t>(r * C + h0 * HS),
                            static_cast<size_t>((h1 - h0) * HS)));
      }
    }
  }
}

}  // namespace

void bias_attention_cached_forward(std::span<float> out, std::span<bf16> out_bf,
                                   std::span<float> qkv, std::span<const float> bias,
                                   const KvCache& cache, int64_t l,
                                   std::span<const int64_t> stream, std::span<const int32_t> pos,
                                   std::span<float> scratch, int64_t N, int64_t C, int64_t NH) {
  check_size(out, N * C, "cached attention out");
  if (!out_bf.empty()) check_size(out_bf, N * C, "cached attention out_bf");
  check_size(qkv, N * 3 * C, "cached attention qkv");
  check_size(bias, 3 * C, "cached attention bias");
  check_size(stream, N, "cached attention stream");
  check_size(pos, N, "cached attention pos");
  check_size(scratch, attention_cached_scratch_size(omp_get_max_threads(), NH, cache.capacity()),
             "cached attention scratch");
  LLMFT_CHECK(C % NH == 0, "C={} NH={}", C, NH);
  for (int64_t r = 0; r < N; ++r)
    LLMFT_CHECK(stream[r] >= 0 && stream[r] < cache.streams() && pos[r] >= 0 &&
                    pos[r] < cache.capacity(),
                "row {}: stream {} position {} outside the cache", r, stream[r], pos[r]);
  if (cache.is_bf16()) cached_forward<bf16>(out, out_bf, qkv, bias, cache, l, stream, pos, scratch, N, C, NH);
  else cached_forward<float>(out, out_bf, qkv, bias, cache, l, stream, pos, scratch, N, C, NH);
}

}  // namespace llmft::kernels
