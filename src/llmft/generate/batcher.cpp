// Continuous batching over the Decoder; see batcher.h.
#include "llmft/generate/batcher.h"

#include <fmt/format.h>

#include <exception>

#include "llmft/core/error.h"
#include "llmft/model/profile.h"

namespace llmft {

void check_prompt(std::span<const int32_t> ids, int64_t V, const std::string& what) {
  if (ids.empty())
    throw Error(fmt::format("{} is empty: nothing to continue from", what),
                "give at least one token of prompt");
  for (int32_t t : ids)
    if (t < 0 || t >= V)
      throw Error(fmt::format("{} has token id {}, outside the vocabulary [0, {})", what, t, V));
}

Batcher::Batcher(Gpt2& model, int64_t slots, int64_t Tcap, Precision precision)
    : dec_(model, slots, Tcap, precision),
      V_(model.config().V),
      Tcap_(Tcap),
      seqs_(static_cast<size_t>(slots)) {
  chunks_.reserve(seqs_.size());
  chunk_slot_.reserve(seqs_.size());
  events_.reserve(seqs_.size());
}

int64_t Batcher::add(std::vector<int32_t> prompt, const SequenceOptions& opts) {
  check_prompt(prompt, V_, "the prompt");
  LLMFT_CHECK(opts.max_new_tokens >= 1, "max_new_tokens {} < 1", opts.max_new_tokens);
  LLMFT_CHECK(has_free_slot(), "no free slot among {}", slots());
  size_t s = 0;
  while (seqs_[s].active) ++s;
  Seq& q = seqs_[s];
  q.active = true;
  q.tokens = std::move(prompt);
  q.cached = 0;
  q.emitted = 0;
  q.opts = opts;
  q.sampler = Sampler(opts.sampler);
  dec_.reset(static_cast<int64_t>(s));
  ++active_;
  return static_cast<int64_t>(s);
}

void Batcher::cancel(int64_t slot) {
  LLMFT_CHECK(slot >= 0 && slot < slots(), "slot {} out of [0, {})", slot, slots());
  Seq& q = seqs_[static_cast<size_t>(slot)];
  if (!q.active) return;
  q.active = false;
  q.tokens = {};
  --active_;
}

// The tokens slot feeds the decoder next: what its cache does not hold yet, or, past Tcap, the
// last Tcap tokens from position 0 (the textbook loop crops to the last maxT tokens, which moves
// every position).
std::span<const int32_t> Batcher::next_feed(Seq& q, int64_t slot) {
  const auto len = static_cast<int64_t>(q.tokens.size());
  const bool refill = q.cached == 0 || len > Tcap_;
  std::span<const int32_t> feed;
  if (len <= Tcap_) {
    feed = std::span<const int32_t>(q.tokens).subspan(static_cast<size_t>(q.cached));
  } else {
    dec_.reset(slot);
    feed = std::span<const int32_t>(q.tokens).subspan(static_cast<size_t>(len - Tcap_));
  }
  if (refill) counts_.prompt_tokens += static_cast<int64_t>(feed.size());
  return feed;
}

const std::vector<Batcher::Event>& Batcher::step() {
  events_.clear();
  chunks_.clear();
  chunk_slot_.clear();
  for (int64_t s = 0; s < slots(); ++s) {
    Seq& q = seqs_[static_cast<size_t>(s)];
    if (!q.active) continue;
    chunks_.push_back({s, next_feed(q, s)});
    chunk_slot_.push_back(s);
  }
  if (chunks_.empty()) return events_;
  logits_.resize(chunks_.size() * static_cast<size_t>(V_));
  dec_.forward(chunks_, logits_);  // logits (chunks, V)
  profile::Scope ps("decode.sample");
  // Each sequence draws from its own sampler (own generator and scratch): in parallel.
  const auto n = static_cast<int64_t>(chunks_.size());
  sampled_.resize(chunks_.size());
  std::exception_ptr failed;
#pragma omp parallel for schedule(dynamic) if (n > 1)
  for (int64_t c = 0; c < n; ++c) {
    Seq& q = seqs_[static_cast<size_t>(chunk_slot_[static_cast<size_t>(c)])];
    const auto row = std::span<const float>(logits_).subspan(
        static_cast<size_t>(c) * static_cast<size_t>(V_), static_cast<size_t>(V_));
    try {
      // q.tokens: the repeat penalty's history
      sampled_[static_cast<size_t>(c)] = q.sampler.sample(row, q.tokens);
    } catch (...) {  // an exception cannot leave the parallel region
#pragma omp critical(llmft_batcher_sample)
      if (!failed) failed = std::current_exception();
    }
  }
  if (failed) std::rethrow_exception(failed);
  for (size_t c = 0; c < chunks_.size(); ++c) {
    const int64_t s = chunk_slot_[c];
    Seq& q = seqs_[static_cast<size_t>(s)];
    q.cached = dec_.length(s);
    const int32_t tok = sampled_[c];
    Event e{s, -1, FinishReason::kNone};
    if (q.opts.stop_at_eos && tok == q.opts.eos_id) {
      e.finish = FinishReason::kEos;
    } else {
      e.token = tok;
      q.tokens.push_back(tok);
      ++q.emitted;
      ++counts_.new_tokens;
      if (q.emitted >= q.opts.max_new_tokens) e.finish = FinishReason::kLength;
    }
    if (e.finish != FinishReason::kNone) cancel(s);
    events_.push_back(e);
  }
  return events_;
}

}  // namespace llmft
