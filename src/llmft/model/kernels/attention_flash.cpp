// Causal attention with an online softmax (FlashAttention-2 on a CPU); see attention.h.
// One (sequence, head) pair per task. Its q, k, v rows are copied into 64-row tiles padded to
// HSp (16, 32, 64 or 128) columns; every product is a register-blocked 4-row micro-kernel.
#include <algorithm>
#include <cmath>

#include "llmft/model/kernels/attention.h"
#include "llmft/model/kernels/common.h"
#include "llmft/model/kernels/vmath.h"

namespace llmft::kernels {

namespace {

constexpr int kB = 64;  // query rows per row block, keys per key block (tile leading dimension)

inline int round_up(int n, int m) { return (n + m - 1) / m * m; }

// One (sequence, head) task: rows [o, o + T) of the batch; dropout counters from `base`; rows
// from `second` on do not see keys [prefix, second) (SeqFork; prefix = second = T: no fork).
struct Task {
  int64_t o, T, h, base, prefix, second;
};

// Keys [lo, hi) of key block c0 that row t (both relative to the sequence) must not see: the
// first continuation of a fork, for rows of the second. n: the row's causal keys in the block;
// lo = hi = n when it sees them all.
inline void hidden_keys(const Task& tk, int64_t t, int64_t c0, int n, int& lo, int& hi) {
  lo = hi = n;
  if (t < tk.second) return;
  lo = static_cast<int>(std::clamp<int64_t>(tk.prefix - c0, 0, n));
  hi = static_cast<int>(std::clamp<int64_t>(tk.second - c0, 0, n));
}

// Attention weights (h, t, t2) of these sequences, NH * sum_s T_s^2, masked ones included: the
// range of the dropout counters; times HS, the work that decides whether to go parallel.
int64_t weight_count(std::span<const int64_t> offsets, int64_t NH) {
  int64_t n = 0;
  for (size_t s = 0; s + 1 < offsets.size(); ++s) {
    const int64_t T = offsets[s + 1] - offsets[s];
    n += NH * T * T;
  }
  return n;
}

Task make_task(std::span<const int64_t> offsets, std::span<const SeqFork> forks, int64_t NH,
               int64_t s, int64_t h) {
  int64_t base = 0;
  for (int64_t j = 0; j < s; ++j) {
    const int64_t T = offsets[j + 1] - offsets[j];
    base += NH * T * T;
  }
  const int64_t T = offsets[s + 1] - offsets[s];
  const SeqFork f = forks.empty() ? SeqFork{T, T} : forks[static_cast<size_t>(s)];
  return {offsets[s], T, h, base + h * T * T, f.prefix, f.second};
}

// s (4 rows, ld kB) = q (4 rows, ld HSp) @ kt (HSp, ld kB), 16*NV columns. The reduction runs
// over the head dimension with one broadcast q value against NV key vectors: no horizontal sums.
template <int HSp, int NV>
inline void qk4(float* __restrict s, const float* __restrict q, const float* __restrict kt) {
  f32x16 acc[4][NV];
  for (int r = 0; r < 4; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = f32x16{};
  for (int i = 0; i < HSp; ++i) {
    f32x16 kv[NV];
    for (int v = 0; v < NV; ++v) load16(kv[v], kt + i * kB + 16 * v);
    for (int r = 0; r < 4; ++r) {
      const float a = q[r * HSp + i];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * kv[v];
    }
  }
  for (int r = 0; r < 4; ++r)
    for (int v = 0; v < NV; ++v) store16(s + r * kB + 16 * v, acc[r][v]);
}

// The first `ncols` (1..64) columns of qk4, rounded up to 16 (kt is zero-padded there).
template <int HSp>
inline void qk_rows4(float* s, const float* q, const float* kt, int ncols) {
  switch ((ncols + 15) / 16) {
    case 1: qk4<HSp, 1>(s, q, kt); break;
    case 2: qk4<HSp, 2>(s, q, kt); break;
    case 3: qk4<HSp, 3>(s, q, kt); break;
    default: qk4<HSp, 4>(s, q, kt); break;
  }
}

// out (4 rows, ld HSp) += sum_{k in [k0, k1)} a[r * ar + k * ak] * b[k] (rows of b: ld HSp).
// With (ar, ak) = (kB, 1) a is a tile row-major, with (1, kB) it is read transposed.
template <int HSp>
inline void acc4(float* __restrict out, const float* __restrict a, int ar, int ak,
                 const float* __restrict b, int k0, int k1) {
  constexpr int kNV = HSp / 16, kCh = kNV < 4 ? kNV : 4;
  for (int c = 0; c < kNV; c += kCh) {
    f32x16 acc[4][kCh];
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < kCh; ++v) load16(acc[r][v], out + r * HSp + 16 * (c + v));
    for (int k = k0; k < k1; ++k) {
      f32x16 bv[kCh];
      for (int v = 0; v < kCh; ++v) load16(bv[v], b + k * HSp + 16 * (c + v));
      for (int r = 0; r < 4; ++r) {
        const float x = a[r * ar + k * ak];
        for (int v = 0; v < kCh; ++v) acc[r][v] += x * bv[v];
      }
    }
    for (int r = 0; r < 4; ++r)
      for (int v = 0; v < kCh; ++v) store16(out + r * HSp + 16 * (c + v), acc[r][v]);
  }
}

// dst (npad rows, HSp) = mul * rows of src (ld), zero past n rows and HS columns.
template <int HSp>
inline void load_rows(float* dst, const float* src, int64_t ld, int n, int npad, int64_t HS,
                      float mul) {
  for (int r = 0; r < npad; ++r) {
    float* d = dst + r * HSp;
    int64_t i = 0;
    if (r < n) {
      const float* s = src + r * ld;
#pragma omp simd
      for (int64_t c = 0; c < HS; ++c) d[c] = s[c] * mul;
      i = HS;
    }
    for (; i < HSp; ++i) d[i] = 0.0f;
  }
}

// dst (HSp, ld kB): dst[i][j] = src[j * ld + i] for j < n, i < HS; zero up to npad columns.
template <int HSp>
inline void load_transposed(float* dst, const float* src, int64_t ld, int n, int npad,
                            int64_t HS) {
  for (int j = 0; j < n; ++j) {
    const float* s = src + j * ld;
    for (int64_t i = 0; i < HS; ++i) dst[i * kB + j] = s[i];
  }
  for (int64_t i = 0; i < HSp; ++i)
    for (int j = i < HS ? n : 0; j < npad; ++j) dst[i * kB + j] = 0.0f;
}

// Forward of one (sequence, head): out rows and lse for all T rows.
// With a bias, qkv_mut is qkv (writable) and the task first adds the bias to its slice.
template <int HSp>
void flash_forward_task(float* out, uint16_t* out_bf, float* lse, const float* qkv, float* qkv_mut,
                        const float* bias, const Task& tk, int64_t C, int64_t NH, int64_t HS,
                        float scale, float p, uint64_t seed) {
  alignas(64) float Q[kB * HSp];   // (kB, HSp) scale * q of the row block
  alignas(64) float Kt[HSp * kB];  // (HSp, kB) keys of the key block, transposed
  alignas(64) float Vb[kB * HSp];  // (kB, HSp) values of the key block
  alignas(64) float S[kB * kB];    // (kB, kB) scores, then exp(scores - running max)
  alignas(64) float O[kB * HSp];   // (kB, HSp) unnormalised output
  float m[kB], l[kB];              // running max and sum of exp per row
  const int64_t ld = 3 * C, T = tk.T, h = tk.h;
  if (bias) {
    // qkv += bias on this task's rows and head columns (no other task touches them).
    for (int64_t t = 0; t < T; ++t)
      for (int part = 0; part < 3; ++part) {
        float* row = qkv_mut + (tk.o + t) * ld + part * C + h * HS;
        const float* b = bias + part * C + h * HS;
#pragma omp simd
        for (int64_t i = 0; i < HS; ++i) row[i] += b[i];
      }
  }
  const float* qh = qkv + tk.o * ld + h * HS;
  const float* kh = qh + C;
  const float* vh = qh + 2 * C;
  for (int64_t r0 = 0; r0 < T; r0 += kB) {
    const int br = static_cast<int>(std::min<int64_t>(kB, T - r0)), brp = round_up(br, 4);
    load_rows<HSp>(Q, qh + r0 * ld, ld, br, brp, HS, scale);
    std::fill_n(O, brp * HSp, 0.0f);
    std::fill_n(m, kB, -INFINITY);
    std::fill_n(l, kB, 0.0f);
    // Causal: key blocks up to the diagonal one (c0 == r0); row r0 + r sees keys <= r0 + r.
    for (int64_t c0 = 0; c0 <= r0; c0 += kB) {
      const int bc = static_cast<int>(std::min<int64_t>(kB, r0 + br - c0));
      const int bcp = round_up(bc, 16);
      load_transposed<HSp>(Kt, kh + c0 * ld, ld, bc, bcp, HS);
      load_rows<HSp>(Vb, vh + c0 * ld, ld, bc, bc, HS, 1.0f);
      // Keys that row group g (rows g..g+3) needs: up to its last row.
      auto group_keys = [&](int g) {
        return static_cast<int>(std::min<int64_t>(bc, r0 + g + 4 - c0));
      };
      for (int g = 0; g < brp; g += 4) qk_rows4<HSp>(S + g * kB, Q + g * HSp, Kt, group_keys(g));
      for (int r = 0; r < br; ++r) {
        const int n = static_cast<int>(std::min<int64_t>(bc, r0 + r - c0 + 1));  // causal keys
        int lo, hi;  // of which [lo, hi) are hidden (a fork's first continuation)
        hidden_keys(tk, r0 + r, c0, n, lo, hi);
        float* srow = S + r * kB;
        float mx = m[r];
#pragma omp simd reduction(max : mx)
        for (int j = 0; j < lo; ++j) mx = std::max(mx, srow[j]);
#pragma omp simd reduction(max : mx)
        for (int j = hi; j < n; ++j) mx = std::max(mx, srow[j]);
        // Key 0 is visible to every row (prefix >= 1), so mx is finite from the first block on.
        const float sum = exp_shifted(srow, lo, mx) + exp_shifted(srow + hi, n - hi, mx);
        std::fill(srow + lo, srow + hi, 0.0f);
        for (int j = n, ng = group_keys(r & ~3); j < ng; ++j) srow[j] = 0.0f;
        if (c0 > 0) {
          // Earlier blocks were summed against the old max: rescale them.
          const float alpha = vexp(m[r] - mx);
          l[r] *= alpha;
          float* o = O + r * HSp;
#pragma omp simd
          for (int i = 0; i < HSp; ++i) o[i] *= alpha;
        }
        l[r] += sum;
        m[r] = mx;
        // The normaliser counts every weight; dropout zeroes some after it (softmax, then
        // dropout, as the unfused reference in tests/support/kernels/attention_unfused.cpp).
        if (p > 0.0f) {
          const uint64_t id = static_cast<uint64_t>(tk.base + (r0 + r) * T + c0);
          for (int j = 0; j < n; ++j) srow[j] *= dropout_scale(seed, id + j, p);
        }
      }
      // O += P V; padded rows br..brp-1 have zero scores and are never written out.
      for (int g = 0; g < brp; g += 4)
        acc4<HSp>(O + g * HSp, S + g * kB, kB, 1, Vb, 0, group_keys(g));
    }
    for (int r = 0; r < br; ++r) {
      const float inv = 1.0f / l[r];
      float* y = out + (tk.o + r0 + r) * C + h * HS;
      const float* o = O + r * HSp;
#pragma omp simd
      for (int64_t i = 0; i < HS; ++i) y[i] = o[i] * inv;
      if (out_bf) {
        uint16_t* yb = out_bf + (tk.o + r0 + r) * C + h * HS;
#pragma omp simd
        for (int64_t i = 0; i < HS; ++i) yb[i] = float_to_bf16(y[i]);
      }
      lse[(tk.o + r0 + r) * NH + h] = m[r] + std::log(l[r]);
    }
  }
}

// The softmax backward of one (row block, key block) pair, rows [0, brp): S holds the scores and
// dP the products dout . v on entry; on return S holds drop(P) and dP holds dS = P (dP - D), with
// the masked (causal, hidden by a fork) and padded entries zero (the reductions after it read
// them).
inline void softmax_backward_block(float* S, float* dP, const float* L, const float* D, int br,
                                   int brp, int bc, int bcp, int64_t r0, int64_t c0,
                                   const Task& tk, float p, uint64_t seed) {
  for (int r = 0; r < brp; ++r) {
    const int n = r < br ? static_cast<int>(std::min<int64_t>(bc, r0 + r - c0 + 1)) : 0;
    float* srow = S + r * kB;
    float* drow = dP + r * kB;
    const float lr = r < br ? L[r] : 0.0f, dr = r < br ? D[r] : 0.0f;
    if (p > 0.0f) {
      const uint64_t id = static_cast<uint64_t>(tk.base + (r0 + r) * tk.T + c0);
      for (int j = 0; j < n; ++j) {
        // y = sum drop(P) v:  dP = mask * (dout . v);  dS = P (dP - D)
        const float pj = vexp(srow[j] - lr), mk = dropout_scale(seed, id + j, p);
        srow[j] = pj * mk;
        drow[j] = pj * (drow[j] * mk - dr);
      }
    } else {
#pragma omp simd
      for (int j = 0; j < n; ++j) {
        const float pj = vexp(srow[j] - lr);
        srow[j] = pj;
        drow[j] = pj * (drow[j] - dr);
      }
    }
    for (int j = n; j < bcp; ++j) srow[j] = drow[j] = 0.0f;
    int lo, hi;
    hidden_keys(tk, r0 + r, c0, n, lo, hi);
    for (int j = lo; j < hi; ++j) srow[j] = drow[j] = 0.0f;
  }
}

// Backward of one (sequence, head), FlashAttention-2 order: key blocks outside, so dK and dV of
// a block stay in tiles; dq rows are accumulated into dqkv once per key block.
// psum: (3C) row of this task's sequence in the dbias scratch, or null.
template <int HSp>
void flash_backward_task(float* dqkv, float* psum, const float* dout, const float* qkv,
                         const float* out, const float* lse, const Task& tk, int64_t C,
                         int64_t NH, int64_t HS, float scale, float p, uint64_t seed) {
  alignas(64) float Kb[kB * HSp];  // (kB, HSp) keys of the key block
  alignas(64) float Kt[HSp * kB];  // (HSp, kB) the same, transposed
  alignas(64) float Vt[HSp * kB];  // (HSp, kB) values, transposed
  alignas(64) float dK[kB * HSp], dV[kB * HSp];
  alignas(64) float Q[kB * HSp];   // (kB, HSp) scale * q of the row block
  alignas(64) float dO[kB * HSp];  // (kB, HSp) dout of the row block
  alignas(64) float dQ[kB * HSp];
  alignas(64) float S[kB * kB];    // scores, then dropped weights drop(P)
  alignas(64) float dP[kB * kB];   // dout . v, then dS = d(scores)
  float D[kB], L[kB];
  alignas(64) float sq[HSp] = {}, sk[HSp] = {}, sv[HSp] = {};  // column sums for dbias
  const int64_t ld = 3 * C, T = tk.T, h = tk.h;
  const float* qh = qkv + tk.o * ld + h * HS;
  const float* kh = qh + C;
  const float* vh = qh + 2 * C;
  float* dqh = dqkv + tk.o * ld + h * HS;
  float* dkh = dqh + C;
  float* dvh = dqh + 2 * C;
  for (int64_t c0 = 0; c0 < T; c0 += kB) {
    const int bc = static_cast<int>(std::min<int64_t>(kB, T - c0));
    const int bcp = round_up(bc, 16), bc4 = round_up(bc, 4);
    load_rows<HSp>(Kb, kh + c0 * ld, ld, bc, bc4, HS, 1.0f);
    load_transposed<HSp>(Kt, kh + c0 * ld, ld, bc, bcp, HS);
    load_transposed<HSp>(Vt, vh + c0 * ld, ld, bc, bcp, HS);
    std::fill_n(dK, bc4 * HSp, 0.0f);
    std::fill_n(dV, bc4 * HSp, 0.0f);
    for (int64_t r0 = c0; r0 < T; r0 += kB) {
      const int br = static_cast<int>(std::min<int64_t>(kB, T - r0)), brp = round_up(br, 4);
      load_rows<HSp>(Q, qh + r0 * ld, ld, br, brp, HS, scale);
      load_rows<HSp>(dO, dout + (tk.o + r0) * C + h * HS, C, br, brp, HS, 1.0f);
      // D = rowsum(dO * O) = sum_t2 P dP: the softmax backward's row term.
      for (int r = 0; r < br; ++r) {
        const float* o = out + (tk.o + r0 + r) * C + h * HS;
        const float* g = dO + r * HSp;
        float d = 0.0f;
#pragma omp simd reduction(+ : d)
        for (int64_t i = 0; i < HS; ++i) d += g[i] * o[i];
        D[r] = d;
        L[r] = lse[(tk.o + r0 + r) * NH + h];
      }
      auto group_keys = [&](int g) {
        return static_cast<int>(std::min<int64_t>(bc, r0 + g + 4 - c0));
      };
      // The same score products as the forward (bit for bit), and dout . v.
      for (int g = 0; g < brp; g += 4) {
        qk_rows4<HSp>(S + g * kB, Q + g * HSp, Kt, group_keys(g));
        qk_rows4<HSp>(dP + g * kB, dO + g * HSp, Vt, group_keys(g));
      }
      softmax_backward_block(S, dP, L, D, br, brp, bc, bcp, r0, c0, tk, p, seed);
      // dV += drop(P)^T dO;  dK += dS^T (scale q): key group kg needs rows from its diagonal on.
      for (int kg = 0; kg < bc; kg += 4) {
        const int rs = static_cast<int>(std::max<int64_t>(0, c0 + kg - r0));
        acc4<HSp>(dV + kg * HSp, S + kg, 1, kB, dO, rs, br);
        acc4<HSp>(dK + kg * HSp, dP + kg, 1, kB, Q, rs, br);
      }
      // dq = scale * dS K
      std::fill_n(dQ, brp * HSp, 0.0f);
      for (int g = 0; g < brp; g += 4)
        acc4<HSp>(dQ + g * HSp, dP + g * kB, kB, 1, Kb, 0, group_keys(g));
      for (int r = 0; r < br; ++r) {
        float* d = dqh + (r0 + r) * ld;
        const float* s = dQ + r * HSp;
#pragma omp simd
        for (int64_t i = 0; i < HS; ++i) {
          const float g = scale * s[i];
          d[i] += g;
          sq[i] += g;
        }
      }
    }
    for (int j = 0; j < bc; ++j) {
      float* dk = dkh + (c0 + j) * ld;
      float* dv = dvh + (c0 + j) * ld;
      const float* gk = dK + j * HSp;
      const float* gv = dV + j * HSp;
#pragma omp simd
      for (int64_t i = 0; i < HS; ++i) {
        dk[i] += gk[i];
        dv[i] += gv[i];
        sk[i] += gk[i];
        sv[i] += gv[i];
      }
    }
  }
  if (psum) {
    std::copy_n(sq, HS, psum + h * HS);
    std::copy_n(sk, HS, psum + C + h * HS);
    std::copy_n(sv, HS, psum + 2 * C + h * HS);
  }
}

// Smallest supported padded head size for HS.
int padded_head_size(int64_t HS) {
  LLMFT_CHECK(HS >= 1 && HS <= 128, "attention_flash supports head sizes 1..128, got {}", HS);
  return HS <= 16 ? 16 : HS <= 32 ? 32 : HS <= 64 ? 64 : 128;
}

void check_common(std::span<const float> qkv, std::span<const int64_t> offsets,
                  std::span<const SeqFork> forks, int64_t N, int64_t C, int64_t NH, float p) {
  check_seq_offsets(offsets, N);
  if (!forks.empty()) {
    LLMFT_CHECK(forks.size() + 1 == offsets.size(), "{} forks for {} sequences", forks.size(),
                offsets.size() - 1);
    for (size_t s = 0; s < forks.size(); ++s) {
      const int64_t T = offsets[s + 1] - offsets[s];
      const SeqFork f = forks[s];
      LLMFT_CHECK(0 <= f.prefix && f.prefix <= f.second && f.second <= T &&
                      (f.second == T || f.prefix >= 1),
                  "sequence {} of length {}: fork (prefix {}, second {})", s, T, f.prefix,
                  f.second);
    }
  }
  LLMFT_CHECK(NH >= 1 && C % NH == 0, "C={} not divisible by NH={}", C, NH);
  LLMFT_CHECK(p >= 0.0f && p < 1.0f, "attention dropout p={}", p);
  check_size(qkv, N * 3 * C, "attention qkv");
}

}  // namespace

namespace {

void flash_forward(float* out, uint16_t* out_bf, float* lse, const float* qkv, float* qkv_mut,
                   const float* bias, std::span<const int64_t> offsets,
                   std::span<const SeqFork> forks, int64_t C, int64_t NH, float p,
                   uint64_t seed) {
  const int64_t S = static_cast<int64_t>(offsets.size()) - 1, HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  auto* task = &flash_forward_task<64>;
  switch (padded_head_size(HS)) {
    case 16: task = &flash_forward_task<16>; break;
    case 32: task = &flash_forward_task<32>; break;
    case 128: task = &flash_forward_task<128>; break;
    default: break;
  }
  const int64_t work = weight_count(offsets, NH) * HS;
#pragma omp parallel for collapse(2) schedule(dynamic) if (work >= kParallelMin)
  for (int64_t s = 0; s < S; ++s)
    for (int64_t h = 0; h < NH; ++h)
      task(out, out_bf, lse, qkv, qkv_mut, bias, make_task(offsets, forks, NH, s, h), C, NH, HS,
           scale, p, seed);
}

}  // namespace

void attention_flash_forward(std::span<float> out, std::span<float> lse,
                             std::span<const float> qkv, std::span<const int64_t> offsets,
                             int64_t N, int64_t C, int64_t NH, float dropout_p, uint64_t seed,
                             std::span<const SeqFork> forks) {
  check_common(qkv, offsets, forks, N, C, NH, dropout_p);
  check_size(out, N * C, "attention out");
  check_size(lse, N * NH, "attention lse");
  flash_forward(out.data(), nullptr, lse.data(), qkv.data(), nullptr, nullptr, offsets, forks, C,
                NH, dropout_p, seed);
}

void bias_attention_flash_forward(std::span<float> out, std::span<uint16_t> out_bf,
                                  std::span<float> lse, std::span<float> qkv,
                                  std::span<const float> bias,
                                  std::span<const int64_t> offsets, int64_t N, int64_t C,
                                  int64_t NH, float dropout_p, uint64_t seed,
                                  std::span<const SeqFork> forks) {
  check_common(qkv, offsets, forks, N, C, NH, dropout_p);
  check_size(out, N * C, "attention out");
  check_size(lse, N * NH, "attention lse");
  check_size(bias, 3 * C, "attention qkv bias");
  if (!out_bf.empty()) check_size(out_bf, N * C, "attention out_bf");
  flash_forward(out.data(), out_bf.empty() ? nullptr : out_bf.data(), lse.data(), qkv.data(),
                qkv.data(), bias.data(), offsets, forks, C, NH, dropout_p, seed);
}

int64_t attention_flash_backward_scratch_size(std::span<const int64_t> offsets, int64_t C) {
  return (static_cast<int64_t>(offsets.size()) - 1) * 3 * C;
}

void attention_flash_backward(std::span<float> dqkv, std::span<float> dbias,
                              std::span<float> scratch, std::span<const float> dout,
                              std::span<const float> qkv, std::span<const float> out,
                              std::span<const float> lse, std::span<const int64_t> offsets,
                              int64_t N, int64_t C, int64_t NH, float dropout_p, uint64_t seed,
                              std::span<const SeqFork> forks) {
  check_common(qkv, offsets, forks, N, C, NH, dropout_p);
  check_size(dqkv, N * 3 * C, "attention dqkv");
  check_size(dout, N * C, "attention dout");
  check_size(out, N * C, "attention out");
  check_size(lse, N * NH, "attention lse");
  const bool sums = !dbias.empty();
  if (sums) {
    check_size(dbias, 3 * C, "attention dbias");
    check_size(scratch, attention_flash_backward_scratch_size(offsets, C), "attention scratch");
  }
  const int64_t S = static_cast<int64_t>(offsets.size()) - 1, HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  auto* task = &flash_backward_task<64>;
  switch (padded_head_size(HS)) {
    case 16: task = &flash_backward_task<16>; break;
    case 32: task = &flash_backward_task<32>; break;
    case 128: task = &flash_backward_task<128>; break;
    default: break;
  }
  const int64_t work = weight_count(offsets, NH) * HS;
  const int64_t kBlock = 256, nblocks = (3 * C + kBlock - 1) / kBlock;
  float* part = scratch.data();  // (S, 3C) column sums of each sequence's contributions
#pragma omp parallel if (work >= kParallelMin)
  {
#pragma omp for collapse(2) schedule(dynamic)
    for (int64_t s = 0; s < S; ++s)
      for (int64_t h = 0; h < NH; ++h)
        task(dqkv.data(), sums ? part + s * 3 * C : nullptr, dout.data(), qkv.data(), out.data(),
             lse.data(), make_task(offsets, forks, NH, s, h), C, NH, HS, scale, dropout_p, seed);
    if (sums) {
      // Sequence partials in sequence order (independent of the thread count).
#pragma omp for schedule(static)
      for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t c0 = blk * kBlock, c1 = std::min(3 * C, c0 + kBlock);
        float acc[kBlock] = {};
        for (int64_t s = 0; s < S; ++s) {
          const float* ps = part + s * 3 * C;
#pragma omp simd
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += ps[c];
        }
        for (int64_t c = c0; c < c1; ++c) dbias[c] += acc[c - c0];
      }
    }
  }
}

}  // namespace llmft::kernels
