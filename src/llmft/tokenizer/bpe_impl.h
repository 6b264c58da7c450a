// BpeTokenizer's state, shared by its two source files: bpe.cpp (loading, decoding) and
// bpe_encode.cpp (encoding, whole texts and streams). Private to the tokenizer module.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/tokenizer/bpe.h"
#include "llmft/tokenizer/vocab.h"

namespace llmft {

inline constexpr std::string_view kEndOfTextText = "<|endoftext|>";

struct BpeTokenizer::Impl {
  bpe::TokenTable tokens;
  bpe::PairTable pairs;
  uint32_t byte_id[256] = {};
  // Merge of two raw bytes (first row of every merge loop), indexed by (b0 << 8 | b1): 0xFFFF
  // where the pair is not a token.
  std::vector<uint16_t> byte_pair;
  int32_t eot_id = kEndOfText;
  uint64_t cache_key = 0;  // tells this vocabulary's entries in the per-thread cache apart

  uint32_t byte_pair_rank(const char* p) const {
    const uint16_t r = byte_pair[(size_t(uint8_t(p[0])) << 8) | uint8_t(p[1])];
    return r == 0xFFFF ? bpe::PairTable::kNone : r;
  }

  // Loading (bpe.cpp): byte_id from `tokens`; the merge list checked against `tokens`;
  // `pairs` and `byte_pair` from every split of an indexed token into two tokens.
  void find_byte_tokens(const std::string& origin);
  void check_merges(const std::vector<std::string>& merges, const std::string& origin,
                    const std::vector<int>& alphabet) const;
  void build_pair_tables(const std::vector<bool>& indexed);

  // Encoding (bpe_encode.cpp). The ids of `text` (valid UTF-8, no special tokens) are appended
  // to `out`; with `flush` set, a long piece hands its ids to it in batches as it goes.
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out,
                       const IdsSink* flush = nullptr) const;
  void encode_piece(const char* p, size_t n, std::vector<int32_t>& out, const IdsSink* flush) const;
  void merge_small(const char* p, size_t n, std::vector<int32_t>& out) const;
  void merge_large(const char* p, size_t n, std::vector<int32_t>& out, const IdsSink* flush) const;
};

}  // namespace llmft
