// Building the tokenizer's hash tables.
#include "llmft/tokenizer/vocab.h"

#include <bit>

namespace llmft::bpe {

void TokenTable::build(const std::vector<std::string>& tokens, const std::vector<bool>& indexed) {
  arena_.clear();
  offsets_.assign(1, 0);
  for (const auto& t : tokens) {
    arena_ += t;
    offsets_.push_back(arena_.size());
  }
  const size_t cap = std::bit_ceil(tokens.size() * 2 + 16);
  slots_.assign(cap, Slot{});
  mask_ = cap - 1;
  for (uint32_t id = 0; id < tokens.size(); ++id) {
    if (!indexed[id]) continue;
    const uint64_t h = hash_bytes(tokens[id].data(), tokens[id].size());
    size_t slot = h & mask_;
    while (slots_[slot].id != kNone) slot = (slot + 1) & mask_;
    slots_[slot] = Slot{id, static_cast<uint32_t>(h >> 32)};
  }
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
