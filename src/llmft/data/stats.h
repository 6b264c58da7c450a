// Dataset statistics for `llmft data stats`: token lengths per split and the padding overhead of
// an epoch of batches.
#pragma once

#include <cstdint>

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

}  // namespace llmft
