// KV-cached generation over the model's forward; see decoder.h. This file only schedules: which
// rows go through Gpt2::forward_cached in a pass, and which of them reach the output head.
#include "llmft/generate/decoder.h"

#include <omp.h>

#include <algorithm>

#include "llmft/core/error.h"
#include "llmft/model/kernels/bf16.h"
#include "llmft/model/profile.h"

namespace llmft {

namespace {
// Rows processed per pass: prefill is chunked so the arena stays small whatever the prompts.
constexpr int64_t kMaxRows = 512;
}  // namespace

Decoder::Decoder(Gpt2& model, int64_t B, int64_t Tcap, Precision precision)
    : model_(model),
      precision_(precision),
      C_(model.config().C),
      V_(model.config().V),
      Nmax_(std::max(B, kMaxRows)),
      cache_(B, model.config().L, Tcap, model.config().C, precision == Precision::kBf16) {
  const Gpt2Config& cfg = model.config();
  LLMFT_CHECK(Tcap <= cfg.maxT, "bad decoder shape B={} Tcap={} maxT={}", B, Tcap, cfg.maxT);
  acts_.reserve(cfg, Nmax_, /*keep_layers=*/false, precision == Precision::kBf16);
  const auto n = static_cast<size_t>(Nmax_), b = static_cast<size_t>(B);
  len_.assign(b, 0);
  scores_.resize(static_cast<size_t>(
      kernels::attention_cached_scratch_size(omp_get_max_threads(), cfg.NH, Tcap)));
  ids_.resize(n);
  pos_.resize(n);
  row_stream_.resize(n);
  last_.resize(b * static_cast<size_t>(C_));
  last_bf_.resize(precision == Precision::kBf16 ? b * static_cast<size_t>(C_) : 0);
  head_out_.resize(b * static_cast<size_t>(V_));
  seen_.resize(b);
  done_.reserve(b);
  pass_.reserve(b);
  out_row_.reserve(b);
}

int64_t Decoder::memory_bytes() const {
  const size_t floats = scores_.size() + last_.size() + head_out_.size();
  return static_cast<int64_t>(floats * sizeof(float)) + cache_.bytes() + acts_.bytes() +
         static_cast<int64_t>(last_bf_.size()) * 2 + model_.bf16_bytes();
}

int64_t Decoder::stream_bytes(const Gpt2Config& cfg, int64_t Tcap, Precision precision) {
  const int64_t value = precision == Precision::kBf16 ? 2 : 4;
  return cfg.L * 2 * Tcap * cfg.C * value + cfg.V * 4 + cfg.C * 6;
}

void Decoder::reset(int64_t stream) {
  LLMFT_CHECK(stream >= 0 && stream < streams(), "stream {} out of [0, {})", stream, streams());
  len_[static_cast<size_t>(stream)] = 0;
}

void Decoder::check(std::span<const DecodeChunk> chunks, std::span<float> logits) {
  const auto S = static_cast<int64_t>(chunks.size());
  LLMFT_CHECK(static_cast<int64_t>(logits.size()) >= S * V_, "logits has {} floats, need {}",
              logits.size(), S * V_);
  std::fill(seen_.begin(), seen_.end(), 0);
  for (const auto& ch : chunks) {
    LLMFT_CHECK(ch.stream >= 0 && ch.stream < streams(), "stream {} out of [0, {})", ch.stream,
                streams());
    LLMFT_CHECK(!seen_[static_cast<size_t>(ch.stream)], "stream {} twice in one call", ch.stream);
    seen_[static_cast<size_t>(ch.stream)] = 1;
    LLMFT_CHECK(!ch.tokens.empty(), "empty chunk for stream {}", ch.stream);
    LLMFT_CHECK(length(ch.stream) + static_cast<int64_t>(ch.tokens.size()) <= capacity(),
                "stream {} would hold {} tokens, capacity {}", ch.stream,
                length(ch.stream) + static_cast<int64_t>(ch.tokens.size()), capacity());
    for (int32_t t : ch.tokens) LLMFT_CHECK(t >= 0 && t < V_, "token id {} out of [0, {})", t, V_);
  }
  // The attention scratch follows a thread count raised since construction.
  const auto scratch = static_cast<size_t>(kernels::attention_cached_scratch_size(
      omp_get_max_threads(), model_.config().NH, capacity()));
  if (scores_.size() < scratch) scores_.resize(scratch);
}

void Decoder::forward(std::span<const DecodeChunk> chunks, std::span<float> logits) {
  check(chunks, logits);
  // Passes of at most Nmax_ rows; a chunk split across passes is fine (the cache carries it).
  // Only a chunk's final piece asks for logits. Per-call bookkeeping lives in members sized at
  // construction: no allocation per step.
  done_.assign(chunks.size(), 0);  // chunks.size() <= B: within the reserved capacity
  for (;;) {
    pass_.clear();
    out_row_.clear();
    int64_t rows = 0;
    for (size_t i = 0; i < chunks.size() && rows < Nmax_; ++i) {
      const size_t left = chunks[i].tokens.size() - done_[i];
      if (left == 0) continue;
      const size_t take = std::min<size_t>(left, static_cast<size_t>(Nmax_ - rows));
      pass_.push_back({chunks[i].stream, chunks[i].tokens.subspan(done_[i], take)});
      done_[i] += take;
      out_row_.push_back(done_[i] == chunks[i].tokens.size() ? static_cast<int64_t>(i) : -1);
      rows += static_cast<int64_t>(take);
    }
    if (pass_.empty()) break;
    pass(pass_, out_row_, logits);
  }
}

void Decoder::pass(std::span<const DecodeChunk> chunks, std::span<const int64_t> out_row,
                   std::span<float> logits) {
  int64_t N = 0;
  for (const auto& ch : chunks) {
    const int64_t p0 = length(ch.stream);
    for (size_t i = 0; i < ch.tokens.size(); ++i, ++N) {
      const auto r = static_cast<size_t>(N);
      ids_[r] = ch.tokens[i];
      pos_[r] = static_cast<int32_t>(p0 + static_cast<int64_t>(i));
      row_stream_[r] = ch.stream;
    }
  }
  const auto n = static_cast<size_t>(N);
  model_.forward_cached(acts_, cache_, std::span(ids_).first(n), std::span(pos_).first(n),
                        std::span(row_stream_).first(n), scores_,
                        precision_);
  for (const auto& ch : chunks) len_[static_cast<size_t>(ch.stream)] += static_cast<int64_t>(ch.tokens.size());
  // The output head only for the rows whose logits are wanted: each chunk's last row.
  int64_t row = 0, W = 0;
  for (size_t p = 0; p < chunks.size(); ++p) {
    row += static_cast<int64_t>(chunks[p].tokens.size());
    if (out_row[p] < 0) continue;
    std::copy_n(acts_.lnf.data() + (row - 1) * C_, C_, last_.data() + W * C_);
    ++W;
  }
  if (W == 0) return;
  profile::Scope ps("decode.head");
  const auto wc = static_cast<size_t>(W * C_);
  Act x{std::span<const float>(last_).first(wc), {}};
  if (precision_ == Precision::kBf16) {
    kernels::to_bf16(std::span(last_bf_).first(wc), x.f);
    x.b = std::span<const kernels::bf16>(last_bf_).first(wc);
  }
  // logits (W, V) = lnf rows (W, C) @ head^T
  model_.head_logits(head_out_, x, W, precision_, Pass::kDecode);
  int64_t w = 0;
  for (size_t p = 0; p < chunks.size(); ++p) {
    if (out_row[p] < 0) continue;
    std::copy_n(head_out_.data() + w * V_, V_, logits.data() + out_row[p] * V_);
    ++w;
  }
}

}  // namespace llmft
