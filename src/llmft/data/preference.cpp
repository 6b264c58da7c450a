// Preference data and its packed collate; see preference.h. Matches the reference's
// PreferenceDataset and custom_collate_fn (dpo-from-scratch.ipynb, cells 20-33).
#include "llmft/data/preference.h"

#include <fmt/format.h>

#include <algorithm>

#include "llmft/core/error.h"
#include "llmft/data/batch.h"
#include "llmft/data/template.h"

namespace llmft {

namespace {

// The dataset with `field` as each entry's response.
InstructionDataset with_response(const InstructionDataset& ds, const char* field) {
  InstructionDataset out;
  out.path = ds.path;
  out.entries.reserve(ds.size());
  for (size_t i = 0; i < ds.size(); ++i) {
    const auto& raw = ds.entries[i].raw;
    const auto it = raw.find(field);
    if (it == raw.end() || !it->is_string()) {
      throw Error(fmt::format("{}: entry {}: {} \"{}\"", ds.path.string(), i,
                              it == raw.end() ? "missing field" : "not a string:", field),
                  "preference data needs string fields chosen and rejected in every entry "
                  "(`llmft prefs` writes them)");
    }
    InstructionEntry e = ds.entries[i];
    e.output = it->get<std::string>();
    out.entries.push_back(std::move(e));
  }
  return out;
}

// First target position that counts: token t is predicted from input t-1, and the reference's
// mask drops tokens [0, prompt_len + 2).
int64_t first_target(int64_t prompt_len) { return prompt_len + 2; }

}  // namespace

PreferenceTokens tokenize_preferences(const InstructionDataset& ds, const BpeTokenizer& tok,
                                      int64_t max_length, int threads) {
  PreferenceTokens p;
  p.chosen = tokenize_dataset(with_response(ds, "chosen"), PromptTemplate::kAlpaca, tok, threads);
  p.rejected =
      tokenize_dataset(with_response(ds, "rejected"), PromptTemplate::kAlpaca, tok, threads);
  for (size_t i = 0; i < ds.size(); ++i) {
    for (const auto* t : {&p.chosen, &p.rejected}) {
      const int64_t len = std::min(t->length(i), max_length);
      if (len <= first_target(t->prompt_lens[i])) {
        throw Error(
            fmt::format("{}: entry {}: the {} answer has no token within the first {} tokens",
                        ds.path.string(), i, t == &p.chosen ? "chosen" : "rejected", max_length),
            "DPO scores an answer by its mean token log-probability; give every entry a "
            "non-empty chosen and rejected answer (or raise --max-length)");
      }
    }
  }
  return p;
}

PreferenceBatch collate_preferences(const PreferenceTokens& data, std::span<const int64_t> idx,
                                    int64_t max_length) {
  LLMFT_CHECK(!idx.empty() && max_length >= 2, "collate_preferences({} pairs, max_length {})",
              idx.size(), max_length);
  PreferenceBatch b;
  b.B = static_cast<int64_t>(idx.size());
  b.indices.assign(idx.begin(), idx.end());
  b.seq_offsets.push_back(0);
  b.target_offsets.push_back(0);
  int64_t common = 0;  // the reference pads both sides to max(len + 1), then crops
  // Rows [from, L - 1) of one text: input ids[j] predicts ids[j + 1], which counts when it is a
  // response token.
  auto rows = [&](std::span<const int32_t> ids, int64_t prompt_len, int64_t from) {
    const int64_t L = std::min(static_cast<int64_t>(ids.size()), max_length);
    const int64_t first = first_target(prompt_len);
    int64_t n_targets = 0;
    for (int64_t j = from; j + 1 < L; ++j) {
      b.inputs.push_back(ids[j]);
      const bool counts = j + 1 >= first;
      b.targets.push_back(counts ? ids[j + 1] : kIgnoreIndex);
      n_targets += counts;
    }
    b.target_offsets.push_back(b.target_offsets.back() + n_targets);
    common = std::max(common, static_cast<int64_t>(ids.size()) + 1);
  };
  auto end_sequence = [&](int64_t prefix, int64_t second) {
    const int64_t start = b.seq_offsets.back(), end = static_cast<int64_t>(b.inputs.size());
    b.seq_offsets.push_back(end);
    b.forks.push_back({prefix < 0 ? end - start : prefix, second < 0 ? end - start : second});
  };
  for (int64_t i : idx) {
    const auto k = static_cast<size_t>(i);
    LLMFT_CHECK(k < data.chosen.size() && k < data.rejected.size(), "pair index {} of {}", i,
                data.chosen.size());
    const auto c = data.chosen.ids(k), r = data.rejected.ids(k);
    const int64_t pc = data.chosen.prompt_lens[k], pr = data.rejected.prompt_lens[k];
    // Shared rows: the same input and no counted target in either text (the prompt; a row whose
    // target counts belongs to each text's score on its own).
    const int64_t rows_c = std::min(static_cast<int64_t>(c.size()), max_length) - 1;
    const int64_t rows_r = std::min(static_cast<int64_t>(r.size()), max_length) - 1;
    const int64_t limit = std::min({rows_c, rows_r, first_target(pc) - 1, first_target(pr) - 1});
    int64_t shared = 0;
    while (shared < limit && c[static_cast<size_t>(shared)] == r[static_cast<size_t>(shared)])
      ++shared;
    rows(c, pc, 0);
    if (shared == 0) {  // nothing in common: two sequences
      end_sequence(-1, -1);
      rows(r, pr, 0);
      end_sequence(-1, -1);
    } else {
      const int64_t second = static_cast<int64_t>(b.inputs.size()) - b.seq_offsets.back();
      rows(r, pr, shared);
      end_sequence(shared, second);
    }
  }
  b.padded_tokens = b.B * std::min(common, max_length);
  return b;
}

}  // namespace llmft
