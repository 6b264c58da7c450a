// Dataset statistics for `llmft data stats`: token lengths per split and the padding overhead of
// an epoch of batches.
#pragma once

#include <cstdint>
#include <string>

#include "llmft/data/dataset.h"
#include "llmft/data/loader.h"
#include "llmft/data/tokenized.h"

namespace llmft {

struct LengthStats {
  int64_t count = 0, total = 0, min = 0, max = 0;
  double median = 0, mean = 0;  // median of an even count: mean of the two middle values
};
// Training-text lengths (tokens) of the entries in `range`; prompt lengths when `prompts`.
LengthStats length_stats(const TokenizedDataset& data, IndexRange range, bool prompts = false);

struct EpochTokens {
  int64_t batches = 0;
  int64_t real_tokens = 0, padded_tokens = 0, packed_tokens = 0, target_tokens = 0;
  // (padded - real) / real * 100: extra work of padding over the entries' own tokens.
  double padding_overhead_percent() const {
    return real_tokens ? 100.0 * static_cast<double>(padded_tokens - real_tokens) /
                             static_cast<double>(real_tokens)
                       : 0.0;
  }
};
// Sums the counts of every batch of one epoch.
EpochTokens epoch_tokens(const DataLoader& loader, int64_t epoch);

// Exact repeats (byte for byte; near-duplicates are `llmft dedup`'s work).
struct ExactDuplicates {
  int64_t entries = 0;      // entries equal to an earlier one in instruction, input and output
  int64_t cross_split = 0;  // of those, in another split than their first copy (split_dataset)
  int64_t instruction = 0, input = 0, output = 0;  // non-empty field equal to an earlier entry's
};
ExactDuplicates exact_duplicates(const InstructionDataset& ds);

// Entries whose training text is longer than `max_len` tokens (the smaller of the maximum length
// and the model's context): training crops their end, the end-of-text target included.
// `response_lost`: those cropped before the first token of their output, which train on the
// prompt and the template's response marker only.
struct Truncation {
  int64_t max_len = 0;
  int64_t entries = 0, response_lost = 0;
};
Truncation truncation(const TokenizedDataset& data, int64_t max_len);
// "3 of 1100 entries are longer than 1024 tokens: training crops their end; 1 of them loses its
// whole response (trains on template tokens only)", or "no entry is longer than 1024 tokens".
std::string describe_truncation(const Truncation& t, size_t total_entries);

}  // namespace llmft
