// Dataset statistics: length summaries and per-epoch token counts.
#include "llmft/data/stats.h"

#include <algorithm>
#include <vector>

namespace llmft {

LengthStats length_stats(const TokenizedDataset& data, IndexRange range, bool prompts) {
  LengthStats s;
  std::vector<int64_t> v;
  v.reserve(range.size());
  for (size_t i = range.begin; i < range.end; ++i) {
    v.push_back(prompts ? data.prompt_lens[i] : data.length(i));
  }
  if (v.empty()) return s;
  std::sort(v.begin(), v.end());
  s.count = static_cast<int64_t>(v.size());
  for (int64_t x : v) s.total += x;
  s.min = v.front();
  s.max = v.back();
  const size_t h = v.size() / 2;
  s.median = v.size() % 2 ? static_cast<double>(v[h]) : 0.5 * static_cast<double>(v[h - 1] + v[h]);
  s.mean = static_cast<double>(s.total) / static_cast<double>(s.count);
  return s;
}

EpochTokens epoch_tokens(const DataLoader& loader, int64_t epoch) {
  EpochTokens e;
  e.batches = loader.num_batches();
  for (int64_t b = 0; b < e.batches; ++b) {
    const Batch batch = loader.batch(epoch, b);
    e.real_tokens += batch.real_tokens;
    e.padded_tokens += batch.padded_tokens;
    e.packed_tokens += batch.packed_tokens();
    e.target_tokens += batch.target_tokens;
  }
  return e;
}

}  // namespace llmft
