// Pre-tokenization of a dataset with the GPT-2 tokenizer (one encode_batch call).
#include "llmft/data/tokenized.h"

#include "llmft/core/error.h"

namespace llmft {

TokenizedDataset make_tokenized_dataset(const std::vector<std::vector<int32_t>>& ids,
                                        const std::vector<int64_t>& prompt_lens,
                                        std::vector<int64_t> response_starts) {
  if (response_starts.empty()) response_starts = prompt_lens;
  LLMFT_CHECK(response_starts.size() == prompt_lens.size(), "{} response starts for {} entries",
              response_starts.size(), prompt_lens.size());
  LLMFT_CHECK(ids.size() == prompt_lens.size(), "{} id lists but {} prompt lengths", ids.size(),
              prompt_lens.size());
  TokenizedDataset d;
  d.offsets.reserve(ids.size() + 1);
  d.offsets.push_back(0);
  size_t total = 0;
  for (const auto& v : ids) total += v.size();
  d.tokens.reserve(total);
  for (const auto& v : ids) {
    LLMFT_CHECK(!v.empty(), "entry {} has no tokens", d.offsets.size() - 1);
    d.tokens.insert(d.tokens.end(), v.begin(), v.end());
    d.offsets.push_back(static_cast<int64_t>(d.tokens.size()));
  }
  d.prompt_lens = prompt_lens;
  d.response_starts = std::move(response_starts);
  return d;
}

TokenizedDataset tokenize_dataset(const InstructionDataset& ds, PromptTemplate t,
                                  const BpeTokenizer& tok, int threads) {
  const size_t n = ds.size();
  // texts: (3n) full training texts, then prompts, then prompts with the response marker.
  std::vector<std::string> texts(3 * n);
  for (size_t i = 0; i < n; ++i) {
    texts[i] = format_training_text(t, ds.entries[i]);
    texts[n + i] = format_prompt(t, ds.entries[i]);
    texts[2 * n + i] = texts[n + i] + std::string(response_prefix(t));
  }
  // The loader already rejected a literal <|endoftext|>, so the strict mode cannot throw here.
  const auto ids = tok.encode_batch(texts, SpecialTokens::kDisallow, threads);
  LLMFT_CHECK(ids.size() == 3 * n, "encode_batch returned {} lists for {} texts", ids.size(),
              3 * n);
  TokenizedDataset d;
  d.offsets.reserve(n + 1);
  d.offsets.push_back(0);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) total += ids[i].size();
  d.tokens.reserve(total);
  d.prompt_lens.resize(n);
  d.response_starts.resize(n);
  for (size_t i = 0; i < n; ++i) {
    d.tokens.insert(d.tokens.end(), ids[i].begin(), ids[i].end());
    d.offsets.push_back(static_cast<int64_t>(d.tokens.size()));
    d.prompt_lens[i] = static_cast<int64_t>(ids[n + i].size());
    d.response_starts[i] = static_cast<int64_t>(ids[2 * n + i].size());
  }
  // Conversations: the prompt's prefixes ending where each earlier answer starts and ends.
  std::vector<std::string> prefixes;
  std::vector<size_t> owner;
  for (size_t i = 0; i < n; ++i) {
    for (const auto& [b, e] : history_answer_ranges(t, ds.entries[i])) {
      prefixes.push_back(texts[n + i].substr(0, b));
      prefixes.push_back(texts[n + i].substr(0, e));
      owner.push_back(i);
    }
  }
  if (prefixes.empty()) return d;
  const auto pre = tok.encode_batch(prefixes, SpecialTokens::kDisallow, threads);
  d.answer_spans.resize(n);
  for (size_t k = 0; k < owner.size(); ++k) {
    d.answer_spans[owner[k]].emplace_back(static_cast<int64_t>(pre[2 * k].size()),
                                          static_cast<int64_t>(pre[2 * k + 1].size()));
  }
  return d;
}

}  // namespace llmft
