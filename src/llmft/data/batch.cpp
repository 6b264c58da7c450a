// Collate: padded and packed batches from token lists (SPEC §3, reference custom_collate_fn).
#include "llmft/data/batch.h"

#include <algorithm>

#include "llmft/core/error.h"

namespace llmft {

Batch collate(std::span<const CollateItem> items, const CollateOptions& options) {
  LLMFT_CHECK(!items.empty(), "collate needs at least one item");
  LLMFT_CHECK(!options.allowed_max_length || *options.allowed_max_length >= 1,
              "allowed_max_length {} < 1", *options.allowed_max_length);
  int64_t longest = 0;
  for (const CollateItem& it : items) {
    LLMFT_CHECK(!it.tokens.empty(), "item {} has no tokens", it.index);
    longest = std::max(longest, static_cast<int64_t>(it.tokens.size()));
  }
  Batch b;
  b.B = static_cast<int64_t>(items.size());
  b.T = options.allowed_max_length ? std::min(longest, *options.allowed_max_length) : longest;
  const int64_t B = b.B, T = b.T;
  b.indices.resize(B);
  b.inputs.assign(B * T, kPadTokenId);
  b.targets.assign(B * T, kIgnoreIndex);
  b.padded_offsets.resize(B + 1);
  b.seq_offsets.assign(B + 1, 0);
  std::vector<int32_t> row_targets(longest);  // (longest) one row before truncation
  for (int64_t r = 0; r < B; ++r) {
    const CollateItem& it = items[r];
    const auto tok = it.tokens;
    const auto n = static_cast<int64_t>(tok.size());
    b.indices[r] = it.index;
    b.padded_offsets[r + 1] = (r + 1) * T;
    // padded = tok + [pad] * (longest + 1 - n); inputs = padded[:-1], targets = padded[1:].
    int32_t* in = &b.inputs[r * T];
    for (int64_t t = 0; t < std::min(n, T); ++t) in[t] = tok[t];
    for (int64_t t = 0; t < longest; ++t) row_targets[t] = t + 1 < n ? tok[t + 1] : kPadTokenId;
    // Every pad in the targets but the first is ignored (as the reference: by value, so a 50256
    // inside the item counts too).
    bool seen_pad = false;
    for (int64_t t = 0; t < longest; ++t) {
      if (row_targets[t] != kPadTokenId) continue;
      if (seen_pad) row_targets[t] = kIgnoreIndex;
      seen_pad = true;
    }
    if (options.mask_prompt) {
      // targets[:prompt_len - 1] = -100 (Python slicing: a prefix longer than the row masks it all).
      const int64_t masked = std::clamp<int64_t>(it.prompt_len - 1, 0, longest);
      size_t span = 0;  // it.kept is in order
      for (int64_t p = 0; p < masked; ++p) {
        while (span < it.kept.size() && it.kept[span].second <= p + 1) ++span;
        const bool keep = span < it.kept.size() && it.kept[span].first <= p + 1;
        if (!keep) row_targets[p] = kIgnoreIndex;
      }
    }
    int32_t* tg = &b.targets[r * T];
    std::copy(row_targets.begin(), row_targets.begin() + T, tg);

    int64_t len = 0;  // one past the last non-ignored target
    for (int64_t t = 0; t < T; ++t) {
      if (tg[t] != kIgnoreIndex) {
        len = t + 1;
        ++b.target_tokens;
      }
    }
    b.seq_offsets[r + 1] = b.seq_offsets[r] + len;
    b.real_tokens += std::min(n, T);
  }
  b.padded_tokens = B * T;
  b.packed_inputs.resize(b.seq_offsets[B]);
  b.packed_targets.resize(b.seq_offsets[B]);
  for (int64_t r = 0; r < B; ++r) {
    const int64_t len = b.seq_offsets[r + 1] - b.seq_offsets[r];
    // Pointer arithmetic, not &v[i]: the packed vectors may be empty (UBSan: null reference).
    std::copy_n(b.inputs.data() + r * T, len, b.packed_inputs.data() + b.seq_offsets[r]);
    std::copy_n(b.targets.data() + r * T, len, b.packed_targets.data() + b.seq_offsets[r]);
  }
  return b;
}

}  // namespace llmft
