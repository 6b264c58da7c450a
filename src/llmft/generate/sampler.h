// Picks the next token from one row of logits (SPEC §7): greedy (temperature 0 = argmax, ties to
// the lowest id like torch.argmax), or temperature sampling after optional top-k, min-p and top-p
// filtering, from llmft's own deterministic RNG (same seed, same tokens, on every machine). A
// repeat penalty (llama.cpp's) first lowers the logits of the tokens seen last.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace llmft {

struct SamplerOptions {
  float temperature = 0.0f;  // 0 = greedy (argmax); > 0 = sample from softmax(logits / T)
  int top_k = 0;             // 0 = off; else keep the k largest logits (ties with the k-th kept)
  float top_p = 1.0f;        // 1 = off; else keep the smallest most-probable set with mass >= p
  uint64_t seed = 123;       // RNG seed (only used when temperature > 0)
  // llama.cpp's: keep tokens whose logit is >= the largest + ln(min_p), i.e. whose probability at
  // temperature 1 is at least min_p times the top token's (applied before temperature). 0 = off.
  float min_p = 0.0f;
  // llama.cpp's repeat penalty: each distinct token among the last repeat_last_n of the history
  // (prompt + generated) has its logit divided by the penalty when positive, multiplied when
  // negative, before anything else (greedy too). 1 = off; repeat_last_n 0 = off, -1 = all.
  float repeat_penalty = 1.0f;
  int repeat_last_n = 64;

  bool greedy() const { return temperature == 0.0f; }
  bool penalizes() const { return repeat_penalty != 1.0f && repeat_last_n != 0; }
  // Throws UsageError naming the setting: temperature < 0 or not finite, top_k < 0,
  // top_p outside (0, 1], min_p outside [0, 1], repeat_penalty not > 0, repeat_last_n < -1.
  void validate() const;
};

// xoshiro256** seeded through splitmix64 (Blackman & Vigna). Chosen because it is tiny, fast,
// and fully specified, so a seed gives the same stream on every compiler and platform
// (std::uniform_real_distribution is not portable across standard libraries).
class Rng {
 public:
  explicit Rng(uint64_t seed);
  uint64_t next_u64();
  // Uniform in [0, 1) with 53 random bits.
  double uniform();

 private:
  uint64_t s_[4];
};

// Index of the largest value; the lowest index among equal maxima (torch.argmax). NaN never wins.
int32_t argmax(std::span<const float> logits);

// One sampler per stream: it owns the stream's RNG and scratch space (V entries), so streams
// sample independently and a stream's tokens do not depend on which others share its batch.
class Sampler {
 public:
  explicit Sampler(const SamplerOptions& opts);  // validates opts
  // logits: (V). history: the tokens so far (prompt + generated, oldest first), read only by the
  // repeat penalty. Returns the chosen id.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history = {});
  // The distribution sample() draws from (after the penalty, temperature, top-k, min-p, top-p), as
  // (id, prob) pairs with probabilities summing to 1. Greedy: the argmax with probability 1.
  std::vector<std::pair<int32_t, double>> distribution(std::span<const float> logits,
                                                       std::span<const int32_t> history = {});
  const SamplerOptions& options() const { return opts_; }

 private:
  // logits with the repeat penalty applied (a copy in penalized_), or logits as they are.
  std::span<const float> penalize(std::span<const float> logits, std::span<const int32_t> history);
  // Fills cand_ with the kept (id, prob) pairs, most probable first where top-p needs order.
  void build(std::span<const float> logits);
  SamplerOptions opts_;
  Rng rng_;
  std::vector<std::pair<int32_t, double>> cand_;
  std::vector<float> penalized_;
  std::vector<int32_t> seen_;
};

// Seed for stream `index` of a run seeded with `seed`: streams get independent, reproducible RNGs
// whatever the batch size or order of completion.
uint64_t stream_seed(uint64_t seed, uint64_t index);

}  // namespace llmft
