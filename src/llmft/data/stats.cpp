// Dataset statistics: length summaries and per-epoch token counts.
#include "llmft/data/stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <string_view>
#include <unordered_map>
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

ExactDuplicates exact_duplicates(const InstructionDataset& ds) {
  ExactDuplicates d;
  const DatasetSplits sp = split_dataset(ds.size());
  auto split_of = [&](size_t i) { return i < sp.train.end ? 0 : i < sp.test.end ? 1 : 2; };
  std::unordered_map<std::string, size_t> first;  // length-prefixed fields -> first entry
  std::unordered_map<std::string_view, size_t> seen[3];
  for (size_t i = 0; i < ds.size(); ++i) {
    const InstructionEntry& e = ds.entries[i];
    const std::string key = std::to_string(e.instruction.size()) + ':' + e.instruction +
                            std::to_string(e.input.size()) + ':' + e.input + e.output;
    const auto [it, fresh] = first.emplace(key, i);
    if (!fresh) {
      ++d.entries;
      d.cross_split += split_of(it->second) != split_of(i);
    }
    const std::string* fields[3] = {&e.instruction, &e.input, &e.output};
    int64_t* counts[3] = {&d.instruction, &d.input, &d.output};
    for (int f = 0; f < 3; ++f) {
      if (!fields[f]->empty() && !seen[f].emplace(*fields[f], i).second) ++*counts[f];
    }
  }
  return d;
}

Truncation truncation(const TokenizedDataset& data, int64_t max_len) {
  Truncation t;
  t.max_len = max_len;
  for (size_t i = 0; i < data.size(); ++i) {
    if (data.length(i) <= max_len) continue;
    ++t.entries;
    // Target position p predicts token p + 1, so tokens 1 .. max_len are learned.
    t.response_lost += data.response_starts[i] > max_len;
  }
  return t;
}

std::string describe_truncation(const Truncation& t, size_t total_entries) {
  if (t.entries == 0) return fmt::format("no entry is longer than {} tokens", t.max_len);
  return fmt::format("{} of {} entries {} longer than {} tokens: training crops their end; {} of "
                     "them {} {} whole response (train{} on template tokens only)",
                     t.entries, total_entries, t.entries == 1 ? "is" : "are", t.max_len,
                     t.response_lost, t.response_lost == 1 ? "loses" : "lose",
                     t.response_lost == 1 ? "its" : "their", t.response_lost == 1 ? "s" : "");
}

}  // namespace llmft
