// KV-cached GPT-2 forward; see decoder.h. Reuses the engine's kernels (encoder, layernorm,
// matmul); GELU by rows and the cached attention are ours: a new row at position p of stream s
// attends to the cached keys/values 0..p of stream s. bf16 products go through packed_bf16.h.
#include "llmft/generate/decoder.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "llmft/core/error.h"
#include "llmft/model/kernels/encoder.h"
#include "llmft/model/kernels/layernorm.h"
#include "llmft/model/kernels/matmul.h"
#include "llmft/model/kernels/vmath.h"

namespace llmft {

namespace k = kernels;

namespace {

// Rows processed per pass: prefill is chunked so the arena stays small whatever the prompts.
constexpr int64_t kMaxRows = 512;

std::span<const float> view(const ParamTable& pt, std::span<const float> flat,
                            const std::string& name) {
  const ParamSpec* s = pt.find(name);
  LLMFT_CHECK(s != nullptr, "no parameter {}", name);
  return pt.view(flat, *s);
}

// A cached key/value element as float (bf16 widens exactly).
inline float value(float x) { return x; }
inline float value(k::bf16 x) {
  const uint32_t u = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// 16 cached keys/values as floats (bf16 widens exactly: its bits are the float's upper half).
inline k::f32x16 load16(const float* p) {
  k::f32x16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline k::f32x16 load16(const k::bf16* p) {
#if defined(__AVX512F__)
  // One VPMOVZXWD from memory (GCC's generic conversion below splits it into halves). The maskz
  // forms: GCC 12 warns about the plain ones' undefined pass-through operand.
  const __m512i w = _mm512_maskz_slli_epi32(
      0xffff,
      _mm512_maskz_cvtepu16_epi32(0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))),
      16);
  return reinterpret_cast<k::f32x16>(_mm512_castsi512_ps(w));
#else
  typedef uint16_t u16x16 __attribute__((vector_size(32)));
  typedef uint32_t u32x16 __attribute__((vector_size(64)));
  u16x16 h;
  std::memcpy(&h, p, sizeof h);
  const u32x16 w = __builtin_convertvector(h, u32x16) << 16;
  k::f32x16 f;
  std::memcpy(&f, &w, sizeof f);
  return f;
#endif
}

inline float hsum(k::f32x16 v) {
  typedef float f32x8 __attribute__((vector_size(32)));
  typedef float f32x4 __attribute__((vector_size(16)));
  const f32x8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) +
                  __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
  const f32x4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
  return (b[0] + b[2]) + (b[1] + b[3]);
}

// exp(sc[t] - max) in place over n scores; returns 1 / their sum.
inline float softmax_weights(float* sc, int64_t n, float maxv) {
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t t = 0; t < n; ++t) {
    const float e = k::vexp(sc[t] - maxv);
    sc[t] = e;
    sum += e;
  }
  return 1.0f / sum;
}

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
        k::f32x16 acc = load16(q + h * HS) * load16(kt + h * HS);
        for (int c = 1; c < NC; ++c) acc += load16(q + h * HS + 16 * c) * load16(kt + h * HS + 16 * c);
        d = hsum(acc);
      } else {
        d = 0.0f;
        for (int64_t i = 0; i < HS; ++i) d += q[h * HS + i] * value(kt[h * HS + i]);
      }
      sc[(h - h0) * n + t] = d * scale;
    }
  }
  for (int64_t h = 0; h < H; ++h) {
    float* s = sc + h * n;
    float maxv = -INFINITY;
    for (int64_t t = 0; t < n; ++t) maxv = std::max(maxv, s[t]);
    const float inv = softmax_weights(s, n, maxv);
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
          k::f32x16 acc = load16(yh + 16 * c);
          acc += w * load16(vt + h * HS + 16 * c);
          std::memcpy(yh + 16 * c, &acc, sizeof acc);
        }
      } else {
        for (int64_t i = 0; i < HS; ++i) yh[i] += w * value(vt[h * HS + i]);
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

// g = gelu(h), (N, H), the engine's formula (kernels/gelu.cpp: x * sigmoid(2u), through vexp),
// row by row: every element goes through the same vector code whatever N is (so a bf16 row never
// depends on its batch), and a decode step's few rows stay vectorised (gelu_forward runs its
// scalar loop below its parallel threshold).
void gelu_rows(std::span<float> g, std::span<const float> h, int64_t N, int64_t H) {
  constexpr float kS = 0.7978845608028654f;  // sqrt(2/pi)
  constexpr float kA = 0.044715f;
#pragma omp parallel for if (N * H >= (1 << 14))
  for (int64_t r = 0; r < N; ++r) {
    const float* x = h.data() + r * H;
    float* y = g.data() + r * H;
#pragma omp simd
    for (int64_t i = 0; i < H; ++i) {
      const float v = x[i];
      const float u = kS * (v + kA * v * v * v);
      y[i] = v / (1.0f + k::vexp(-2.0f * u));
    }
  }
}
inline void store(k::bf16* dst, const float* src, int64_t n) {
  k::to_bf16({dst, static_cast<size_t>(n)}, {src, static_cast<size_t>(n)});
}


// Rows at or below which decode uses small_matmul instead of sgemm: with few rows the product is
// bound by reading the weights once, and sgemm's packing of W would read and write them again.
constexpr int64_t kSmallRows = 16;

// 16 floats; GCC keeps arrays of these in vector registers (zmm with AVX-512, ymm pairs else).
typedef float F16 __attribute__((vector_size(64)));

// out[r, o0:o0+16Q] = inp[r, :] @ W[:, o0:o0+16Q] + bias for r < R; W (IC, OC) row-major.
// R x Q <= 16 accumulators.
template <int R, int Q>
inline void rows_block(float* out, const float* inp, const float* w, const float* bias, int64_t IC,
                       int64_t OC, int64_t o0) {
  F16 acc[R][Q] = {};
  for (int64_t i = 0; i < IC; ++i) {
    const float* wi = w + i * OC + o0;
    F16 wv[Q];
    // One 64-byte copy per vector: a single larger memcpy becomes a call to memmove.
    for (int q = 0; q < Q; ++q) __builtin_memcpy(&wv[q], wi + 16 * q, sizeof(F16));
    for (int r = 0; r < R; ++r) {
      const float x = inp[r * IC + i];
      for (int q = 0; q < Q; ++q) acc[r][q] += x * wv[q];
    }
  }
  for (int r = 0; r < R; ++r) {
    if (bias) {
      for (int q = 0; q < Q; ++q) {
        F16 bv;
        __builtin_memcpy(&bv, bias + o0 + 16 * q, sizeof bv);
        acc[r][q] += bv;
      }
    }
    for (int q = 0; q < Q; ++q) __builtin_memcpy(out + r * OC + o0 + 16 * q, &acc[r][q], sizeof(F16));
  }
}

// out (N, OC) = inp (N, IC) @ W + bias for N <= kSmallRows. kInOut: W (IC, OC), threads split
// the columns and stream W row by row; kOutIn: W (OC, IC), one dot product per (row, output).
void small_matmul(float* out, const float* inp, const float* w, const float* bias, int64_t N,
                  int64_t IC, int64_t OC, k::WeightLayout layout) {
  if (layout == k::WeightLayout::kOutIn) {
#pragma omp parallel for schedule(static)
    for (int64_t o = 0; o < OC; ++o) {
      const float* wo = w + o * IC;  // (IC)
      for (int64_t n = 0; n < N; ++n) {
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t i = 0; i < IC; ++i) acc += inp[n * IC + i] * wo[i];
        out[n * OC + o] = acc + (bias ? bias[o] : 0.0f);
      }
    }
    return;
  }
  // kInOut: threads split the columns in blocks of 256; a block runs R rows at a time with
  // R x Q vector accumulators held in registers. One row reads W's block as 1 KB runs (long
  // enough for the prefetcher); 4 rows take it as 64-column strips, re-read from L2.
  constexpr int64_t kBlock = 256;
  const int64_t nblocks = (OC + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < nblocks; ++blk) {
    const int64_t o0 = blk * kBlock, width = std::min(kBlock, OC - o0);
    int64_t n = 0;
    if (width == kBlock) {
      for (; n + 4 <= N; n += 4)
        for (int64_t c = 0; c < kBlock; c += 64)
          rows_block<4, 4>(out + n * OC, inp + n * IC, w, bias, IC, OC, o0 + c);
      for (; n + 2 <= N; n += 2)
        for (int64_t c = 0; c < kBlock; c += 128)
          rows_block<2, 8>(out + n * OC, inp + n * IC, w, bias, IC, OC, o0 + c);
      for (; n < N; ++n) rows_block<1, 16>(out + n * OC, inp + n * IC, w, bias, IC, OC, o0);
      continue;
    }
    const int64_t w64 = width / 64 * 64;  // ragged last block: 64-column strips, then scalars
    for (; n < N; ++n) {
      for (int64_t c = 0; c < w64; c += 64)
        rows_block<1, 4>(out + n * OC, inp + n * IC, w, bias, IC, OC, o0 + c);
      for (int64_t j = w64; j < width; ++j) {
        float acc = 0.0f;
        for (int64_t i = 0; i < IC; ++i) acc += inp[n * IC + i] * w[i * OC + o0 + j];
        out[n * OC + o0 + j] = acc + (bias ? bias[o0 + j] : 0.0f);
      }
    }
  }
}

// matmul_forward from the engine, or small_matmul for a decode step's few rows.
void linear_fp32(std::span<float> out, std::span<const float> inp, std::span<const float> w,
            std::span<const float> bias, int64_t N, int64_t IC, int64_t OC,
            k::WeightLayout layout = k::WeightLayout::kInOut) {
  if (N > kSmallRows) {
    k::matmul_forward(out, inp, w, bias, N, IC, OC, layout);
    return;
  }
  LLMFT_CHECK(static_cast<int64_t>(out.size()) >= N * OC && static_cast<int64_t>(inp.size()) >= N * IC &&
                  static_cast<int64_t>(w.size()) >= IC * OC,
              "linear: spans too small for N={} IC={} OC={}", N, IC, OC);
  small_matmul(out.data(), inp.data(), w.data(), bias.empty() ? nullptr : bias.data(), N, IC, OC,
               layout);
}

}  // namespace

Decoder::Decoder(const Gpt2Config& cfg, std::span<const float> params, int64_t B, int64_t Tcap,
                 int threads, Precision precision)
    : cfg_(cfg), B_(B), Tcap_(Tcap), C_(cfg.C), L_(cfg.L), NH_(cfg.NH), HS_(cfg.HS()), V_(cfg.V),
      precision_(precision) {
  const ParamTable pt(cfg);
  LLMFT_CHECK(static_cast<int64_t>(params.size()) >= pt.total(), "params has {} floats, need {}",
              params.size(), pt.total());
  LLMFT_CHECK(B >= 1 && Tcap >= 1 && Tcap <= cfg.maxT, "bad decoder shape B={} Tcap={} maxT={}",
              B, Tcap, cfg.maxT);
  if (threads > 0) {
    omp_set_num_threads(threads);
    k::set_blas_threads(threads);
  }
  wte_ = view(pt, params, "wte.weight");
  wpe_ = view(pt, params, "wpe.weight");
  lnfw_ = view(pt, params, "ln_f.weight");
  lnfb_ = view(pt, params, "ln_f.bias");
  head_ = cfg.tied ? wte_ : view(pt, params, "lm_head.weight");
  for (int64_t l = 0; l < L_; ++l) {
    const std::string h = "h." + std::to_string(l) + ".";
    Layer ly;
    ly.ln1w = view(pt, params, h + "ln_1.weight");
    ly.ln1b = view(pt, params, h + "ln_1.bias");
    ly.qkvw = view(pt, params, h + "attn.c_attn.weight");
    ly.qkvb = view(pt, params, h + "attn.c_attn.bias");
    ly.projw = view(pt, params, h + "attn.c_proj.weight");
    ly.projb = view(pt, params, h + "attn.c_proj.bias");
    ly.ln2w = view(pt, params, h + "ln_2.weight");
    ly.ln2b = view(pt, params, h + "ln_2.bias");
    ly.fcw = view(pt, params, h + "mlp.c_fc.weight");
    ly.fcb = view(pt, params, h + "mlp.c_fc.bias");
    ly.fcprojw = view(pt, params, h + "mlp.c_proj.weight");
    ly.fcprojb = view(pt, params, h + "mlp.c_proj.bias");
    layers_.push_back(ly);
  }
  Nmax_ = std::max(B, kMaxRows);
  const auto n = static_cast<size_t>(Nmax_), c = static_cast<size_t>(C_);
  len_.assign(static_cast<size_t>(B), 0);
  cache_values_ = B * L_ * 2 * Tcap_ * C_;
  const bool bf16 = precision_ == Precision::kBf16;
  if (bf16) {
    for (const Layer& ly : layers_) {
      packed_.push_back({PackedBf16(ly.qkvw, C_, 3 * C_, k::WeightLayout::kInOut),
                         PackedBf16(ly.projw, C_, C_, k::WeightLayout::kInOut),
                         PackedBf16(ly.fcw, C_, 4 * C_, k::WeightLayout::kInOut),
                         PackedBf16(ly.fcprojw, 4 * C_, C_, k::WeightLayout::kInOut)});
    }
    head_packed_ = PackedBf16(head_, C_, V_, k::WeightLayout::kOutIn);
    cache16_ = std::make_unique_for_overwrite<k::bf16[]>(static_cast<size_t>(cache_values_));
    abf_.resize(n * static_cast<size_t>(bf16_row_stride(4 * C_)));
  } else {
    cache_ = std::make_unique_for_overwrite<float[]>(static_cast<size_t>(cache_values_));
  }
  x_.resize(n * c);
  ln_.resize(n * c);
  qkv_.resize(n * 3 * c);
  att_.resize(n * c);
  h_.resize(n * 4 * c);
  g_.resize(n * 4 * c);
  mean_.resize(n);
  rstd_.resize(n);
  scores_.resize(static_cast<size_t>(omp_get_max_threads() * NH_ * Tcap_));
  last_.resize(static_cast<size_t>(B) * 2 * c);
  ids_.resize(n);
  pos_.resize(n);
  row_stream_.resize(n);
  row_pos_.resize(n);
  head_out_.resize(static_cast<size_t>(B * V_));
  seen_.resize(static_cast<size_t>(B));
  done_.reserve(static_cast<size_t>(B));
  pass_.reserve(static_cast<size_t>(B));
  out_row_.reserve(static_cast<size_t>(B));
  want_.reserve(static_cast<size_t>(B));
}

int64_t Decoder::memory_bytes() const {
  const size_t floats = x_.size() + ln_.size() + qkv_.size() + att_.size() + h_.size() +
                        g_.size() + scores_.size() + last_.size() + head_out_.size();
  int64_t bytes = static_cast<int64_t>(floats * sizeof(float)) +
                  cache_values_ * (cache16_ ? 2 : 4) + static_cast<int64_t>(abf_.size()) * 2 +
                  head_packed_.bytes();
  for (const auto& p : packed_)
    bytes += p.qkvw.bytes() + p.projw.bytes() + p.fcw.bytes() + p.fcprojw.bytes();
  return bytes;
}

void Decoder::linear(std::span<float> out, std::span<const float> inp, std::span<const float> w,
                     const PackedBf16& packed, std::span<const float> bias, int64_t N, int64_t IC,
                     int64_t OC, k::WeightLayout layout) {
  if (precision_ == Precision::kFp32) {
    linear_fp32(out, inp, w, bias, N, IC, OC, layout);
    return;
  }
  round_rows_bf16(abf_, inp, N, IC);
  bf16_linear(out, abf_, packed, bias, N);
}

void Decoder::reset(int64_t stream) {
  LLMFT_CHECK(stream >= 0 && stream < B_, "stream {} out of [0, {})", stream, B_);
  len_[static_cast<size_t>(stream)] = 0;
}

void Decoder::forward(std::span<const DecodeChunk> chunks, std::span<float> logits) {
  const auto S = static_cast<int64_t>(chunks.size());
  LLMFT_CHECK(static_cast<int64_t>(logits.size()) >= S * V_, "logits has {} floats, need {}",
              logits.size(), S * V_);
  // Per-call bookkeeping lives in members sized at construction: no allocation per step (the
  // attention scratch grows only if the thread count was raised since).
  const auto scratch = static_cast<size_t>(omp_get_max_threads() * NH_ * Tcap_);
  if (scores_.size() < scratch) scores_.resize(scratch);
  std::vector<char>& seen = seen_;
  std::fill(seen.begin(), seen.end(), 0);
  for (const auto& ch : chunks) {
    LLMFT_CHECK(ch.stream >= 0 && ch.stream < B_, "stream {} out of [0, {})", ch.stream, B_);
    LLMFT_CHECK(!seen[static_cast<size_t>(ch.stream)], "stream {} twice in one call", ch.stream);
    seen[static_cast<size_t>(ch.stream)] = 1;
    LLMFT_CHECK(!ch.tokens.empty(), "empty chunk for stream {}", ch.stream);
    LLMFT_CHECK(length(ch.stream) + static_cast<int64_t>(ch.tokens.size()) <= Tcap_,
                "stream {} would hold {} tokens, capacity {}", ch.stream,
                length(ch.stream) + static_cast<int64_t>(ch.tokens.size()), Tcap_);
    for (int32_t t : ch.tokens)
      LLMFT_CHECK(t >= 0 && t < V_, "token id {} out of [0, {})", t, V_);
  }
  // Passes of at most Nmax_ rows; a chunk split across passes is fine (the cache carries it).
  // Only a chunk's final piece asks for logits.
  std::vector<size_t>& done = done_;
  done.assign(chunks.size(), 0);  // chunks.size() <= B_: within the reserved capacity
  std::vector<DecodeChunk>& pass = pass_;
  std::vector<int64_t>& out_row = out_row_;
  for (;;) {
    pass.clear();
    out_row.clear();
    int64_t rows = 0;
    for (size_t i = 0; i < chunks.size() && rows < Nmax_; ++i) {
      const size_t left = chunks[i].tokens.size() - done[i];
      if (left == 0) continue;
      const size_t take = std::min<size_t>(left, static_cast<size_t>(Nmax_ - rows));
      pass.push_back({chunks[i].stream, chunks[i].tokens.subspan(done[i], take)});
      done[i] += take;
      out_row.push_back(done[i] == chunks[i].tokens.size() ? static_cast<int64_t>(i) : -1);
      rows += static_cast<int64_t>(take);
    }
    if (pass.empty()) break;
    forward_rows(pass);
    // Final LayerNorm and head only for the rows whose logits are wanted.
    std::vector<int64_t>& want = want_;
    want.clear();
    int64_t r = 0;
    for (size_t p = 0; p < pass.size(); ++p) {
      r += static_cast<int64_t>(pass[p].tokens.size());
      if (out_row[p] >= 0) want.push_back(p);
    }
    if (want.empty()) continue;
    const auto W = static_cast<int64_t>(want.size());
    float* lastx = last_.data();           // (W, C) final rows of the residual stream
    float* lastn = last_.data() + B_ * C_;  // (W, C) after ln_f
    std::span<float> tmp_logits(head_out_.data(), static_cast<size_t>(W * V_));  // W <= B_
    int64_t row = 0;
    size_t wi = 0;
    for (size_t p = 0; p < pass.size(); ++p) {
      row += static_cast<int64_t>(pass[p].tokens.size());
      if (out_row[p] < 0) continue;
      std::copy_n(x_.data() + (row - 1) * C_, C_, lastx + static_cast<int64_t>(wi) * C_);
      ++wi;
    }
    k::layernorm_forward({lastn, static_cast<size_t>(W * C_)}, {mean_.data(), static_cast<size_t>(W)},
                         {rstd_.data(), static_cast<size_t>(W)}, {lastx, static_cast<size_t>(W * C_)},
                         lnfw_, lnfb_, W, C_, cfg_.ln_eps);
    // logits (W, V) = lastn (W, C) @ head^T, head (V, C)
    linear(tmp_logits, {lastn, static_cast<size_t>(W * C_)}, head_, head_packed_, {}, W, C_, V_,
           k::WeightLayout::kOutIn);
    for (int64_t w = 0; w < W; ++w)
      std::copy_n(tmp_logits.data() + w * V_, V_,
                  logits.data() + out_row[static_cast<size_t>(want[static_cast<size_t>(w)])] * V_);
  }
}

void Decoder::forward_rows(std::span<const DecodeChunk> chunks) {
  int64_t N = 0;
  for (const auto& ch : chunks) {
    const int64_t p0 = length(ch.stream);
    for (size_t i = 0; i < ch.tokens.size(); ++i, ++N) {
      ids_[static_cast<size_t>(N)] = ch.tokens[i];
      pos_[static_cast<size_t>(N)] = static_cast<int32_t>(p0 + static_cast<int64_t>(i));
      row_stream_[static_cast<size_t>(N)] = ch.stream;
      row_pos_[static_cast<size_t>(N)] = p0 + static_cast<int64_t>(i);
    }
  }
  const auto nc = static_cast<size_t>(N * C_);
  std::span<float> x(x_.data(), nc), ln(ln_.data(), nc), att(att_.data(), nc);
  std::span<float> qkv(qkv_.data(), 3 * nc), h(h_.data(), 4 * nc), g(g_.data(), 4 * nc);
  std::span<float> mean(mean_.data(), static_cast<size_t>(N)), rstd(rstd_.data(), static_cast<size_t>(N));
  k::encoder_forward(x, {ids_.data(), static_cast<size_t>(N)}, {pos_.data(), static_cast<size_t>(N)},
                     wte_, wpe_, N, C_);
  if (precision_ == Precision::kBf16) {
    layers_bf16(N);
  } else {
    for (int64_t l = 0; l < L_; ++l) {
      const Layer& ly = layers_[static_cast<size_t>(l)];
      static const PackedBf16 kNone;  // fp32 reads the float weights
      k::layernorm_forward(ln, mean, rstd, x, ly.ln1w, ly.ln1b, N, C_, cfg_.ln_eps);
      linear(qkv, ln, ly.qkvw, kNone, ly.qkvb, N, C_, 3 * C_);  // (N, 3C)
      attention(cache_.get(), l, N);                             // att (N, C)
      linear(ln, att, ly.projw, kNone, ly.projb, N, C_, C_);      // (N, C) reuse ln
#pragma omp parallel for if (N * C_ >= (1 << 14))
      for (int64_t i = 0; i < N * C_; ++i) x[i] += ln[i];
      k::layernorm_forward(ln, mean, rstd, x, ly.ln2w, ly.ln2b, N, C_, cfg_.ln_eps);
      linear(h, ln, ly.fcw, kNone, ly.fcb, N, C_, 4 * C_);  // (N, 4C)
      gelu_rows(g, h, N, 4 * C_);
      linear(ln, g, ly.fcprojw, kNone, ly.fcprojb, N, 4 * C_, C_);  // (N, C)
#pragma omp parallel for if (N * C_ >= (1 << 14))
      for (int64_t i = 0; i < N * C_; ++i) x[i] += ln[i];
    }
  }
  for (const auto& ch : chunks) len_[static_cast<size_t>(ch.stream)] += static_cast<int64_t>(ch.tokens.size());
}

void Decoder::layers_bf16(int64_t N) {
  // The fp32 loop's steps, with the bf16 rounding of each product's input fused into the step
  // that makes it and each residual add into the next LayerNorm: 9 parallel regions a layer
  // instead of 15 (each waits for every thread, which costs most when the cores are shared).
  const int64_t C = C_, H = 4 * C_, ldc = bf16_row_stride(C), ldh = bf16_row_stride(H);
  const auto sz = [](int64_t n) { return static_cast<size_t>(n); };
  float* x = x_.data();
  float* d = ln_.data();  // (N, C) the product to add to x before the next LayerNorm
  std::span<k::bf16> a(abf_);
  // a (N, ldc) = bf16(layernorm(x (+= d))), row by row.
  auto add_ln_round = [&](bool add, std::span<const float> w, std::span<const float> b) {
#pragma omp parallel for if (N * C >= (1 << 14))
    for (int64_t r = 0; r < N; ++r) {
      float* xr = x + r * C;
      if (add) {
        const float* dr = d + r * C;
#pragma omp simd
        for (int64_t i = 0; i < C; ++i) xr[i] += dr[i];
      }
      float* lr = h_.data() + r * C;  // scratch row (h is free here)
      k::layernorm_forward({lr, sz(C)}, {mean_.data() + r, 1}, {rstd_.data() + r, 1},
                           {xr, sz(C)}, w, b, 1, C, cfg_.ln_eps);
      round_rows_bf16(a.subspan(sz(r * ldc), sz(ldc)), {lr, sz(C)}, 1, C);
    }
  };
  for (int64_t l = 0; l < L_; ++l) {
    const Layer& ly = layers_[static_cast<size_t>(l)];
    const PackedLayer& pl = packed_[static_cast<size_t>(l)];
    add_ln_round(l > 0, ly.ln1w, ly.ln1b);
    bf16_linear({qkv_.data(), sz(N * 3 * C)}, a, pl.qkvw, ly.qkvb, N);  // (N, 3C)
    attention(cache16_.get(), l, N);  // att (N, C), and its rounding into a
    bf16_linear({d, sz(N * C)}, a, pl.projw, ly.projb, N);  // (N, C)
    add_ln_round(true, ly.ln2w, ly.ln2b);
    bf16_linear({h_.data(), sz(N * H)}, a, pl.fcw, ly.fcb, N);  // (N, 4C)
    // a (N, ldh) = bf16(gelu(h)), row by row
#pragma omp parallel for if (N * H >= (1 << 14))
    for (int64_t r = 0; r < N; ++r) {
      gelu_rows({g_.data() + r * H, sz(H)}, {h_.data() + r * H, sz(H)}, 1, H);
      round_rows_bf16(a.subspan(sz(r * ldh), sz(ldh)), {g_.data() + r * H, sz(H)}, 1, H);
    }
    bf16_linear({d, sz(N * C)}, a, pl.fcprojw, ly.fcprojb, N);  // (N, C)
  }
#pragma omp parallel for if (N * C >= (1 << 14))
  for (int64_t i = 0; i < N * C; ++i) x[i] += d[i];
}

template <typename T>
void Decoder::attention(T* cache, int64_t l, int64_t N) {
  const int64_t C = C_, HS = HS_, NH = NH_;
  // Store the new keys and values at their positions: cache (Tcap, C) per stream and layer.
#pragma omp parallel for if (N * C >= (1 << 14))
  for (int64_t r = 0; r < N; ++r) {
    const int64_t s = row_stream_[static_cast<size_t>(r)], p = row_pos_[static_cast<size_t>(r)];
    const float* row = qkv_.data() + r * 3 * C;  // (3C) = [q | k | v]
    store(kv(cache, s, l, 0) + p * C, row + C, C);
    store(kv(cache, s, l, 1) + p * C, row + 2 * C, C);
  }
  // softmax(q k^T / sqrt(HS)) v over positions 0..p of the row's own stream. A task is a row's
  // heads, or a group of them when there are few rows (a single stream still uses every thread).
  // Every loop's length depends only on p, so a row's result does not depend on the other rows.
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const int64_t threads = omp_get_max_threads();
  const int64_t groups = N >= 4 * threads ? 1 : std::min<int64_t>(NH, 4 * threads);
  const int64_t per = (NH + groups - 1) / groups;
  int64_t work = 0;
  for (int64_t r = 0; r < N; ++r) work += (row_pos_[static_cast<size_t>(r)] + 1) * C;
#pragma omp parallel for collapse(2) schedule(dynamic) if (work >= (1 << 14))
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t h0 = g * per, h1 = std::min(NH, h0 + per);
      if (h0 >= h1) continue;
      const int64_t s = row_stream_[static_cast<size_t>(r)], p = row_pos_[static_cast<size_t>(r)];
      float* sc = scores_.data() + static_cast<int64_t>(omp_get_thread_num()) * NH * Tcap_;
      attend(att_.data() + r * C, qkv_.data() + r * 3 * C, kv(cache, s, l, 0), kv(cache, s, l, 1),
             p + 1, C, HS, h0, h1, scale, sc);
      if constexpr (std::is_same_v<T, k::bf16>) {  // the projection's input, rounded here
        const int64_t ld = bf16_row_stride(C);
        k::bf16* ar = abf_.data() + r * ld;
        k::to_bf16({ar + h0 * HS, static_cast<size_t>((h1 - h0) * HS)},
                   {att_.data() + r * C + h0 * HS, static_cast<size_t>((h1 - h0) * HS)});
        if (h1 == NH && ld > C) ar[C] = 0;
      }
    }
  }
}

}  // namespace llmft
