// Batched text generation (SPEC §7) over the KV-cached Decoder: several prompts of different
// lengths decoded together, a finished stream's slot taken by the next prompt (continuous
// batching). Token for token the textbook loop (crop to the last maxT tokens, logits of the last
// position, top-k, argmax or sample, stop at <|endoftext|> or max_new_tokens).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/generate/sampler.h"
#include "llmft/model/config.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/precision.h"

namespace llmft {

class BpeTokenizer;

// The marker the model writes before its answer: "### Response:" (alpaca, SPEC §7) or
// "<|assistant|>:" (phi3, as the recipe's phi3 variant removes).
inline constexpr std::string_view kAlpacaResponseMarker = "### Response:";
inline constexpr std::string_view kPhi3ResponseMarker = "<|assistant|>:";

struct GenerateOptions {
  int64_t max_new_tokens = 256;  // >= 0
  SamplerOptions sampler;        // temperature 0 = greedy (the recipe)
  // Streams decoded together (>= 1). Each holds a KV cache of 2 x L x (its cropped prompt + new
  // tokens, at most maxT) x C values: gpt2-medium, 311 positions: 61 MB in fp32, 31 MB in bf16.
  // 64 measured near-fastest on the bundled test set (110 prompts x 256 tokens: 110 streams is
  // ~5% (bf16) to ~14% (fp32) faster than 55, 8 streams is 2x slower) at half the cache of 110.
  int64_t batch_size = 64;
  int threads = 0;               // OpenMP/BLAS threads for the call (restored after); 0 = as set
  // bf16: bf16 matrix products with fp32 accumulation and a bf16 KV cache (decoder.h). Greedy
  // outputs may then differ from fp32 where two logits are within bf16 rounding of each other.
  Precision precision = Precision::kFp32;
  bool stop_at_eos = true;       // stop a stream at <|endoftext|> (not included in its output)
  int32_t eos_id = 50256;
  // Called for each new token as it is chosen (never for the stopping <|endoftext|>), in order
  // per prompt; `prompt` is the index into the prompts list.
  std::function<void(size_t prompt, int32_t token)> on_token;
  // Asked after each on_token: true ends that prompt's stream now (a stop string was seen), as if
  // it had reached max_new_tokens.
  std::function<bool(size_t prompt)> stop_now;
  // Called once when a prompt's output is complete.
  std::function<void(size_t prompt)> on_finish;
  // Throws UsageError naming the bad setting.
  void validate() const;
};

struct GenerateStats {
  int64_t prompt_tokens = 0;  // rows run through the model to (re)fill caches
  int64_t new_tokens = 0;     // tokens generated (without stopping <|endoftext|>)
  double seconds = 0.0;
  // The steps that (re)filled a cache (prompt processing, and the token each such step chose)
  // apart from the pure decoding steps, as llama.cpp reports prompt and eval speed.
  double prefill_seconds = 0.0, decode_seconds = 0.0;
  int64_t decode_tokens = 0;  // tokens chosen in pure decoding steps
  double prompt_tokens_per_s() const;
  double decode_tokens_per_s() const;
};

// Generates a continuation for every prompt (token ids, each non-empty) with the model's own
// forward (in bf16 it switches the model's bf16 weight copy to the packed one generation reads). Stream i samples with
// seed stream_seed(opts.sampler.seed, i), so outputs do not depend on batch_size. Returns the new
// tokens per prompt (the prompt itself not included).
std::vector<std::vector<int32_t>> generate(Gpt2& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& opts,
                                           GenerateStats* stats = nullptr);

// Text in, text out: encodes each prompt (with <|endoftext|> allowed, as the recipe), generates,
// and returns extract_response() of each.
std::vector<std::string> generate_responses(Gpt2& model, const BpeTokenizer& tok,
                                            const std::vector<std::string>& prompts,
                                            const GenerateOptions& opts,
                                            std::string_view marker = kAlpacaResponseMarker,
                                            GenerateStats* stats = nullptr);

// The recipe's answer extraction: decode(prompt + new tokens), take the text after the prompt's
// length in bytes, remove every `marker` and trim whitespace (Python's str.strip()).
std::string extract_response(const BpeTokenizer& tok, std::span<const int32_t> prompt_ids,
                             std::span<const int32_t> new_ids, std::string_view prompt_text,
                             std::string_view marker = kAlpacaResponseMarker);
// The text part of it: full_text[prompt_bytes:] without `marker`, stripped.
std::string clean_response(std::string_view full_text, size_t prompt_bytes,
                           std::string_view marker = kAlpacaResponseMarker);

}  // namespace llmft
