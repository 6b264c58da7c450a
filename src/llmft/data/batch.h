// Batching, padding and masking (SPEC §3), in two equivalent forms: padded (B, T) and packed
// (sequences end to end, no padding). Matches the reference's custom_collate_fn (ch07), including
// the prompt-masking variant (exercise 7.2) and allowed_max_length truncation.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <utility>
#include <vector>

namespace llmft {

constexpr int32_t kPadTokenId = 50256;  // <|endoftext|>, also the padding token
constexpr int32_t kIgnoreIndex = -100;  // targets that contribute no loss

struct CollateOptions {
  // Truncate inputs and targets (after the shift) to this many positions; >= 1. The recipe uses
  // 1024 (GPT-2's context). nullopt: no truncation.
  std::optional<int64_t> allowed_max_length;
  // Also ignore the targets of the prompt: targets[0 : prompt_len - 1] = -100.
  bool mask_prompt = false;
};

// One sequence to batch.
struct CollateItem {
  std::span<const int32_t> tokens;  // the training text's ids (prompt + response), not empty
  int64_t prompt_len = 0;           // len(tokenize(prompt)), used when mask_prompt
  int64_t index = 0;                // dataset index, echoed in Batch::indices
  // Token ranges [begin, end) inside the prompt whose targets stay when mask_prompt (a
  // conversation's earlier answers): target position p, which predicts token p + 1, is kept
  // when begin <= p + 1 < end.
  std::span<const std::pair<int64_t, int64_t>> kept = {};
};

// What the model consumes: S sequences, sequence s at [seq_offsets[s], seq_offsets[s+1]) of
// inputs/targets; positions restart at 0 in each sequence, attention stays inside it.
struct TokenBatchView {
  std::span<const int32_t> inputs;       // (N)
  std::span<const int32_t> targets;      // (N), kIgnoreIndex where no loss
  std::span<const int64_t> seq_offsets;  // (S+1), seq_offsets[0] = 0, seq_offsets[S] = N
};

struct Batch {
  int64_t B = 0;                 // sequences
  int64_t T = 0;                 // padded length: min(longest item, allowed_max_length)
  std::vector<int64_t> indices;  // (B) dataset index of each row

  // Padded form, exactly the reference's tensors.
  std::vector<int32_t> inputs;          // (B, T)
  std::vector<int32_t> targets;         // (B, T)
  std::vector<int64_t> padded_offsets;  // (B+1) {0, T, 2T, ...}

  // Packed form: row b keeps its first len_b positions, where len_b is one past its last
  // non-ignored target (0 when every target is ignored). The dropped positions all have target
  // -100 and, attention being causal, no kept position attends to them: the loss (sum and count
  // over non-ignored targets) is identical.
  std::vector<int32_t> packed_inputs;   // (N)
  std::vector<int32_t> packed_targets;  // (N)
  std::vector<int64_t> seq_offsets;     // (B+1)

  int64_t real_tokens = 0;    // input positions holding an item's own token (no padding)
  int64_t padded_tokens = 0;  // B * T: what the padded form computes
  int64_t target_tokens = 0;  // targets that are not kIgnoreIndex (the loss's denominator)
  int64_t packed_tokens() const { return seq_offsets.empty() ? 0 : seq_offsets.back(); }

  TokenBatchView padded() const { return {inputs, targets, padded_offsets}; }
  TokenBatchView packed() const { return {packed_inputs, packed_targets, seq_offsets}; }
};

// Builds both forms from 1 or more items (SPEC §3):
//   L = max(len) + 1; each item + [50256] padded with 50256 to L; inputs = [0, L-1),
//   targets = [1, L); in each row's targets every 50256 but the first becomes -100;
//   with mask_prompt targets[0 : prompt_len-1] = -100; then truncation to allowed_max_length.
Batch collate(std::span<const CollateItem> items, const CollateOptions& options = {});

}  // namespace llmft
