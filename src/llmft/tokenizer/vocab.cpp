// Building the tokenizer's hash tables.
#include "llmft/tokenizer/vocab.h"

#include <bit>

namespace llmft::bpe {

uint32_t TokenTable::build(const std::vector<std::string>& tokens,
                           const std::vector<bool>& indexed) {
  arena_.clear();
  offsets_.assign(1, 0);
  for (const auto& t : tokens) {
    arena_ += t;
    offsets_.push_back(arena_.size());
  }
  const size_t cap = std::bit_ceil(tokens.size() * 2 + 16);
  slots_.assign(cap, Slot{});
  filter_.assign(kFilterWords, 0);
  mask_ = cap - 1;
  uint32_t duplicate = kNone;
  for (uint32_t id = 0; id < tokens.size(); ++id) {
    if (!indexed[id]) continue;
    const uint64_t h = hash_bytes(tokens[id].data(), tokens[id].size());
    const auto tag = static_cast<uint32_t>(h >> 32);
    size_t slot = h & mask_;
    for (; slots_[slot].id != kNone; slot = (slot + 1) & mask_) {
      if (slots_[slot].tag == tag && token(slots_[slot].id) == tokens[id] && duplicate == kNone)
        duplicate = id;
    }
    slots_[slot] = Slot{id, tag};
    filter_[(h >> 40) & kFilterMask] |= uint64_t(1) << (h & 63);
  }
  return duplicate;
}

void PairTable::build(const std::vector<uint32_t>& keys, const std::vector<uint32_t>& values) {
  const size_t cap = std::bit_ceil(keys.size() * 2 + 16);
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  for (size_t i = 0; i < keys.size(); ++i) {
    size_t slot = mix(keys[i]) & mask_;
    while (slots_[slot].key != kEmpty && slots_[slot].key != keys[i]) slot = (slot + 1) & mask_;
    slots_[slot] = Slot{keys[i], values[i]};
  }
}

}  // namespace llmft::bpe
