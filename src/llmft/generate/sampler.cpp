#include "llmft/generate/sampler.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "llmft/core/error.h"

namespace llmft {

void SamplerOptions::validate() const {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    throw UsageError(fmt::format("--temperature {} is invalid: expected a finite number >= 0",
                                 temperature),
                     "use 0 for greedy decoding, or e.g. 0.7 to sample");
  if (top_k < 0)
    throw UsageError(fmt::format("--top-k {} is invalid: expected >= 0", top_k),
                     "0 turns top-k filtering off");
  if (!(top_p > 0.0f && top_p <= 1.0f))
    throw UsageError(fmt::format("--top-p {} is invalid: expected a value in (0, 1]", top_p),
                     "1 turns nucleus filtering off; e.g. 0.9 keeps the top 90% of the mass");
  if (!(min_p >= 0.0f && min_p <= 1.0f))
    throw UsageError(fmt::format("--min-p {} is invalid: expected a value in [0, 1]", min_p),
                     "0 turns min-p filtering off; e.g. 0.05 drops tokens 20x less likely than "
                     "the top one");
  if (!(repeat_penalty > 0.0f) || !std::isfinite(repeat_penalty))
    throw UsageError(
        fmt::format("--repeat-penalty {} is invalid: expected a finite number > 0", repeat_penalty),
        "1 turns the penalty off; e.g. 1.1 makes recent tokens less likely");
  if (repeat_last_n < -1)
    throw UsageError(fmt::format("--repeat-last-n {} is invalid: expected >= -1", repeat_last_n),
                     "0 turns the penalty off, -1 looks at every token so far");
}

static uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

Rng::Rng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

uint64_t Rng::next_u64() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next_u64() >> 11) * 0x1.0p-53; }

uint64_t stream_seed(uint64_t seed, uint64_t index) {
  uint64_t x = seed ^ (index * 0xD1B54A32D192ED03ull);
  return splitmix64(x);
}

int32_t argmax(std::span<const float> logits) {
  LLMFT_CHECK(!logits.empty(), "argmax of an empty row");
  int32_t best = -1;
  float best_v = 0.0f;
  for (size_t i = 0; i < logits.size(); ++i) {
    const float v = logits[i];
    if (std::isnan(v)) continue;
    if (best < 0 || v > best_v) {
      best = static_cast<int32_t>(i);
      best_v = v;
    }
  }
  LLMFT_CHECK(best >= 0, "every logit is NaN");
  return best;
}

Sampler::Sampler(const SamplerOptions& opts) : opts_(opts), rng_(opts.seed) { opts_.validate(); }

std::span<const float> Sampler::penalize(std::span<const float> logits,
                                         std::span<const int32_t> history) {
  if (!opts_.penalizes() || history.empty()) return logits;
  const size_t n = opts_.repeat_last_n < 0
                       ? history.size()
                       : std::min(history.size(), static_cast<size_t>(opts_.repeat_last_n));
  seen_.assign(history.end() - static_cast<std::ptrdiff_t>(n), history.end());
  std::sort(seen_.begin(), seen_.end());
  seen_.erase(std::unique(seen_.begin(), seen_.end()), seen_.end());  // once per distinct token
  penalized_.assign(logits.begin(), logits.end());
  for (int32_t t : seen_) {
    if (t < 0 || static_cast<size_t>(t) >= penalized_.size()) continue;
    float& l = penalized_[static_cast<size_t>(t)];
    l = l > 0.0f ? l / opts_.repeat_penalty : l * opts_.repeat_penalty;
  }
  return penalized_;
}

void Sampler::build(std::span<const float> logits) {
  const int64_t V = static_cast<int64_t>(logits.size());
  cand_.clear();
  // top-k: keep every logit >= the k-th largest (torch: logits < topk(...)[-1] -> -inf).
  float threshold = -std::numeric_limits<float>::infinity();
  if (opts_.top_k > 0 && opts_.top_k < V) {
    std::vector<float> vals;
    vals.reserve(static_cast<size_t>(V));
    for (float v : logits)
      vals.push_back(std::isnan(v) ? -std::numeric_limits<float>::infinity() : v);
    std::nth_element(vals.begin(), vals.begin() + (opts_.top_k - 1), vals.end(),
                     std::greater<float>());
    threshold = vals[static_cast<size_t>(opts_.top_k - 1)];
  }
  float mx = -std::numeric_limits<float>::infinity();
  for (float v : logits)
    if (v > mx) mx = v;
  LLMFT_CHECK(mx > -std::numeric_limits<float>::infinity(), "no finite logit to sample from");
  if (opts_.min_p > 0.0f) threshold = std::max(threshold, mx + std::log(opts_.min_p));
  // softmax(logits / T) over the kept set, in double so tiny probabilities keep their mass.
  const double inv_t = 1.0 / static_cast<double>(opts_.temperature);
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i) {
    const float v = logits[static_cast<size_t>(i)];
    if (!(v >= threshold) || v == -std::numeric_limits<float>::infinity()) continue;
    const double p = std::exp((static_cast<double>(v) - mx) * inv_t);
    cand_.emplace_back(static_cast<int32_t>(i), p);
    sum += p;
  }
  for (auto& c : cand_) c.second /= sum;
  if (opts_.top_p < 1.0f && cand_.size() > 1) {
    // A token with probability below (1-p)/(n-1) can never be needed: all such tokens together
    // hold less than 1-p, so the nucleus is complete before reaching them (llama2.c's trick,
    // which spares sorting the whole vocabulary).
    const double p = opts_.top_p;
    const double cutoff = (1.0 - p) / static_cast<double>(cand_.size() - 1);
    std::erase_if(cand_, [&](const auto& c) { return c.second < cutoff; });
    std::sort(cand_.begin(), cand_.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    double cum = 0.0;
    size_t keep = cand_.size();
    for (size_t i = 0; i < cand_.size(); ++i) {
      cum += cand_[i].second;
      if (cum >= p) {
        keep = i + 1;
        break;
      }
    }
    cand_.resize(keep);
    double kept = 0.0;
    for (const auto& c : cand_) kept += c.second;
    for (auto& c : cand_) c.second /= kept;
  }
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  logits = penalize(logits, history);
  if (opts_.greedy()) return argmax(logits);
  build(logits);
  const double u = rng_.uniform();
  double cum = 0.0;
  for (const auto& c : cand_) {
    cum += c.second;
    if (u < cum) return c.first;
  }
  return cand_.back().first;  // u within rounding of 1
}

std::vector<std::pair<int32_t, double>> Sampler::distribution(std::span<const float> logits,
                                                              std::span<const int32_t> history) {
  logits = penalize(logits, history);
  if (opts_.greedy()) return {{argmax(logits), 1.0}};
  build(logits);
  return cand_;
}

}  // namespace llmft
