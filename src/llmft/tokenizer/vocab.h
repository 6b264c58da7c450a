// The tokenizer's lookup tables: token bytes <-> id, and the pair table used by the BPE merge
// loop. Open addressing, built once at load time, read-only (safe to share between threads).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace llmft::bpe {

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xFF51AFD7ED558CCDull);
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    p += 8, n -= 8;
  }
  uint64_t w = 0;
  std::memcpy(&w, p, n);
  h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
  return h ^ (h >> 32);
}

// All tokens' bytes, one arena, and a hash index from bytes to id.
class TokenTable {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;

  // `tokens[id]` are the bytes of token id. `indexed[id]` false keeps it out of the lookup
  // (special tokens, which only the special-token path may produce). Returns the first indexed
  // id whose bytes an earlier id already has (kNone when all are unique).
  uint32_t build(const std::vector<std::string>& tokens, const std::vector<bool>& indexed);

  // False when no token has hash h (a 64 KiB bit set, ~10% false positives for GPT-2): lets a
  // loop of mostly failing lookups skip the larger table.
  bool may_have(uint64_t h) const { return (filter_[(h >> 40) & kFilterMask] >> (h & 63)) & 1; }

  uint32_t find(std::string_view bytes) const {
    return find(bytes, hash_bytes(bytes.data(), bytes.size()));
  }
  // Same, with h = hash_bytes(bytes) already computed.
  uint32_t find(std::string_view bytes, uint64_t h) const {
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (size_t slot = h & mask_;; slot = (slot + 1) & mask_) {
      const Slot& s = slots_[slot];
      if (s.id == kNone) return kNone;
      if (s.tag == tag && token(s.id) == bytes) return s.id;
    }
  }
  std::string_view token(uint32_t id) const {
    return {arena_.data() + offsets_[id], offsets_[id + 1] - offsets_[id]};
  }
  uint32_t size() const { return static_cast<uint32_t>(offsets_.size() - 1); }

 private:
  struct Slot {
    uint32_t id = kNone, tag = 0;
  };
  std::string arena_;
  std::vector<size_t> offsets_;
  static constexpr size_t kFilterWords = size_t(1) << 13;
  static constexpr size_t kFilterMask = kFilterWords - 1;
  std::vector<Slot> slots_;
  std::vector<uint64_t> filter_;
  size_t mask_ = 0;
};

// (left id, right id) -> id of the token their bytes join into; the id is also the merge rank.
// Ids fit 16 bits (GPT-2 has 50,257 tokens), so a slot is 8 bytes: the table stays cache-friendly.
class PairTable {
 public:
  static constexpr uint32_t kNone = 0xFFFFFFFFu;
  static constexpr uint32_t kMaxTokens = 0xFFFF;  // ids 0..65534; 0xFFFF:0xFFFF marks empty

  void build(const std::vector<uint32_t>& keys, const std::vector<uint32_t>& values);

  static uint32_t key(uint32_t a, uint32_t b) { return (a << 16) | b; }
  uint32_t find(uint32_t a, uint32_t b) const {
    const uint32_t k = key(a, b);
    for (size_t slot = mix(k) & mask_;; slot = (slot + 1) & mask_) {
      const Slot& s = slots_[slot];
      if (s.key == k) return s.value;
      if (s.key == kEmpty) return kNone;
    }
  }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  static size_t mix(uint32_t k) { return (uint64_t(k) * 0x9E3779B97F4A7C15ull) >> 32; }
  struct Slot {
    uint32_t key = kEmpty, value = kNone;
  };
  std::vector<Slot> slots_;
  size_t mask_ = 0;
};

}  // namespace llmft::bpe
