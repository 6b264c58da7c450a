// Preference data for DPO (SPEC §9, FACTS-phase2 §4a): entries with `chosen` and `rejected`
// answers, each formatted as the alpaca prompt + "\n\n### Response:\n" + answer (no EOS), and the
// reference's collate: only response tokens count (mask[:len(prompt) + 2] = False), padding never.
// Chosen and rejected go to the model as one packed batch, each pair as one forked sequence: its
// shared prompt once, then the two answers (kernels::SeqFork), each seeing only the prompt and
// itself, so every score equals that of the pair's two separate sequences.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "llmft/data/dataset.h"
#include "llmft/data/tokenized.h"
#include "llmft/model/kernels/attention.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

// Tokens of every entry's chosen and rejected text (same entries, same order; prompt_lens equal).
struct PreferenceTokens {
  TokenizedDataset chosen, rejected;
  size_t size() const { return chosen.size(); }
};

// Tokenizes ds (alpaca template) with `chosen` / `rejected` as the response. Throws Error naming
// the file and the entry when a field is missing or not a string, or when an answer has no token
// left inside the first `max_length` tokens (its mean log-probability would be 0 / 0).
PreferenceTokens tokenize_preferences(const InstructionDataset& ds, const BpeTokenizer& tok,
                                      int64_t max_length, int threads = 0);

// B preference pairs packed. Each text counts as its first L-1 tokens (L = its length cropped to
// max_length) with targets the next token or -100 (prompt, and the two tokens after it). Pair i
// is packed sequence i: the rows its chosen and rejected texts share (same inputs, no target
// counted: the prompt), then the chosen text's remaining rows, then the rejected text's, with
// forks[i] marking the two continuations (the rare pair with no shared row becomes two
// sequences). The model's token_losses() then hold the counted tokens of text s at
// [target_offsets[s], target_offsets[s+1]), texts interleaved: 2i chosen, 2i + 1 rejected.
struct PreferenceBatch {
  int64_t B = 0;                        // pairs
  std::vector<int64_t> indices;         // (B) dataset index of each pair
  std::vector<int32_t> inputs, targets;  // (N)
  std::vector<int64_t> seq_offsets;     // (S+1), S = B unless a pair shares no row
  std::vector<kernels::SeqFork> forks;  // (S)
  std::vector<int64_t> target_offsets;  // (2B+1)
  int64_t padded_tokens = 0;  // B x the reference's common padded length (its tokens_seen step)
  int64_t tokens() const { return seq_offsets.back(); }
  int64_t target_tokens() const { return target_offsets.back(); }
};

PreferenceBatch collate_preferences(const PreferenceTokens& data, std::span<const int64_t> idx,
                                    int64_t max_length);

}  // namespace llmft
