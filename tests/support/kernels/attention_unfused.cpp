// The unfused causal attention over packed sequences; see attention_unfused.h.
// One (sequence, head) pair per task: its rows of q, k, v, dq, dk, dv belong to it alone.
#include "kernels/attention_unfused.h"

#include <algorithm>
#include <cmath>

#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/vmath.h"

namespace llmft::kernels {

namespace {

inline float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

// Start of sequence s's block in `att` (sequences per batch are few: no table needed).
inline int64_t att_base(std::span<const int64_t> offsets, int64_t NH, int64_t s) {
  int64_t acc = 0;
  for (int64_t j = 0; j < s; ++j) {
    const int64_t T = offsets[j + 1] - offsets[j];
    acc += NH * T * T;
  }
  return acc;
}

}  // namespace

int64_t attention_att_size(std::span<const int64_t> offsets, int64_t NH) {
  int64_t acc = 0;
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    const int64_t T = offsets[s + 1] - offsets[s];
    acc += NH * T * T;
  }
  return acc;
}

void attention_forward(std::span<float> out, std::span<float> att, std::span<const float> qkv,
                       std::span<const int64_t> offsets, int64_t N, int64_t C, int64_t NH,
                       float dropout_p, uint64_t seed) {
  check_seq_offsets(offsets, N);
  check_size(out, N * C, "attention out");
  check_size(qkv, N * 3 * C, "attention qkv");
  check_size(att, attention_att_size(offsets, NH), "attention att");
  LLMFT_CHECK(C % NH == 0, "C={} not divisible by NH={}", C, NH);
  const int64_t S = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const int64_t work = attention_att_size(offsets, NH) * HS;
#pragma omp parallel for collapse(2) schedule(dynamic) if (work >= kParallelMin)
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t o = offsets[s], T = offsets[s + 1] - o;
      const int64_t base = att_base(offsets, NH, s);
      float* a = att.data() + base + h * T * T;  // (T, T)
      for (int64_t t = 0; t < T; ++t) {
        const float* q = qkv.data() + (o + t) * 3 * C + h * HS;  // (HS)
        float* row = a + t * T;                                  // (T)
        float maxv = -INFINITY;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float* k = qkv.data() + (o + t2) * 3 * C + C + h * HS;
          const float v = dot(q, k, HS) * scale;
          row[t2] = v;
          maxv = std::max(maxv, v);
        }
        float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float e = vexp(row[t2] - maxv);
          row[t2] = e;
          sum += e;
        }
        const float inv = 1.0f / sum;
        for (int64_t t2 = 0; t2 <= t; ++t2) row[t2] *= inv;
        for (int64_t t2 = t + 1; t2 < T; ++t2) row[t2] = 0.0f;
        // y = sum_t2 drop(att[t2]) * v[t2]
        float* y = out.data() + (o + t) * C + h * HS;  // (HS)
        for (int64_t i = 0; i < HS; ++i) y[i] = 0.0f;
        const uint64_t row_id = static_cast<uint64_t>(base + h * T * T + t * T);
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          float w = row[t2];
          if (dropout_p > 0.0f) w *= dropout_scale(seed, row_id + t2, dropout_p);
          const float* v = qkv.data() + (o + t2) * 3 * C + 2 * C + h * HS;
#pragma omp simd
          for (int64_t i = 0; i < HS; ++i) y[i] += w * v[i];
        }
      }
    }
  }
}

void attention_backward(std::span<float> dqkv, std::span<float> scratch,
                        std::span<const float> dout, std::span<const float> qkv,
                        std::span<const float> att, std::span<const int64_t> offsets, int64_t N,
                        int64_t C, int64_t NH, float dropout_p, uint64_t seed) {
  check_seq_offsets(offsets, N);
  const int64_t need = attention_att_size(offsets, NH);
  check_size(dqkv, N * 3 * C, "attention dqkv");
  check_size(dout, N * C, "attention dout");
  check_size(qkv, N * 3 * C, "attention qkv");
  check_size(att, need, "attention att");
  check_size(scratch, need, "attention scratch");
  const int64_t S = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
#pragma omp parallel for collapse(2) schedule(dynamic) if (need * HS >= kParallelMin)
  for (int64_t s = 0; s < S; ++s) {
    for (int64_t h = 0; h < NH; ++h) {
      const int64_t o = offsets[s], T = offsets[s + 1] - o;
      const int64_t base = att_base(offsets, NH, s);
      const float* a = att.data() + base + h * T * T;  // (T, T)
      float* da = scratch.data() + base + h * T * T;   // (T, T) d(att)
      for (int64_t t = 0; t < T; ++t) {
        const float* row = a + t * T;
        float* drow = da + t * T;
        const float* g = dout.data() + (o + t) * C + h * HS;  // (HS)
        const uint64_t row_id = static_cast<uint64_t>(base + h * T * T + t * T);
        // y = sum_t2 drop(att[t2]) * v[t2]
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float m = dropout_p > 0.0f ? dropout_scale(seed, row_id + t2, dropout_p) : 1.0f;
          const float* v = qkv.data() + (o + t2) * 3 * C + 2 * C + h * HS;
          float* dv = dqkv.data() + (o + t2) * 3 * C + 2 * C + h * HS;
          drow[t2] = dot(v, g, HS) * m;
          const float w = row[t2] * m;
#pragma omp simd
          for (int64_t i = 0; i < HS; ++i) dv[i] += w * g[i];
        }
        // att = softmax(pre): dpre[t2] = att[t2] * (datt[t2] - sum_j att[j] datt[j])
        float sum = 0.0f;
        for (int64_t t2 = 0; t2 <= t; ++t2) sum += row[t2] * drow[t2];
        // pre[t2] = scale * q . k[t2]
        const float* q = qkv.data() + (o + t) * 3 * C + h * HS;
        float* dq = dqkv.data() + (o + t) * 3 * C + h * HS;
        for (int64_t t2 = 0; t2 <= t; ++t2) {
          const float dpre = row[t2] * (drow[t2] - sum) * scale;
          const float* k = qkv.data() + (o + t2) * 3 * C + C + h * HS;
          float* dk = dqkv.data() + (o + t2) * 3 * C + C + h * HS;
#pragma omp simd
          for (int64_t i = 0; i < HS; ++i) {
            dq[i] += dpre * k[i];
            dk[i] += dpre * q[i];
          }
        }
      }
    }
  }
}

}  // namespace llmft::kernels
