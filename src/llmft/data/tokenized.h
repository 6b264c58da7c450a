// The pre-tokenized dataset (SPEC §1): every training text encoded once, up front, in parallel,
// with the prompt's token count for prompt masking.
#pragma once

#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "llmft/data/batch.h"
#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

struct TokenizedDataset {
  std::vector<int32_t> tokens;       // every entry's ids, end to end
  std::vector<int64_t> offsets;      // (n+1) entry i is tokens[offsets[i], offsets[i+1])
  std::vector<int64_t> prompt_lens;  // (n) len(tokenize(prompt)), as the reference computes it
  // (n) len(tokenize(prompt + response marker)): the index of the first token of the output, for
  // counting entries that a length limit crops before their response.
  std::vector<int64_t> response_starts;
  // (n) token ranges [begin, end) of a conversation's earlier assistant answers (empty for other
  // entries): with the prompt masked, their targets still count (assistant-only loss).
  std::vector<std::vector<std::pair<int64_t, int64_t>>> answer_spans;

  size_t size() const { return prompt_lens.size(); }
  std::span<const int32_t> ids(size_t i) const {
    return std::span<const int32_t>(tokens).subspan(offsets[i], offsets[i + 1] - offsets[i]);
  }
  int64_t length(size_t i) const { return offsets[i + 1] - offsets[i]; }
  // Entry i as collate() takes it.
  CollateItem item(int64_t i) const {
    const auto k = static_cast<size_t>(i);
    return {ids(k), prompt_lens[k], i,
            answer_spans.empty() ? std::span<const std::pair<int64_t, int64_t>>()
                                 : std::span<const std::pair<int64_t, int64_t>>(answer_spans[k])};
  }
};

// Encodes format_training_text, format_prompt and the prompt with its response marker of every
// entry with tok.encode_batch over `threads` threads (0 = all cores); for conversations also the
// text up to the start and the end of each earlier answer (their token counts are the spans, as
// prompt_lens is the prompt's).
TokenizedDataset tokenize_dataset(const InstructionDataset& ds, PromptTemplate t,
                                  const BpeTokenizer& tok, int threads = 0);

// From id lists made some other way (tests, other tokenizers). Sizes must match; lists not empty.
// response_starts defaults to prompt_lens.
TokenizedDataset make_tokenized_dataset(const std::vector<std::vector<int32_t>>& ids,
                                        const std::vector<int64_t>& prompt_lens,
                                        std::vector<int64_t> response_starts = {});

}  // namespace llmft
