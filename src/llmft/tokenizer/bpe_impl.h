// BpeTokenizer's state, shared by its two source files: bpe.cpp (loading, decoding) and
// bpe_encode.cpp (encoding, whole texts and streams). Private to the tokenizer module.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/tokenizer/bpe.h"
#include "llmft/tokenizer/vocab.h"

namespace llmft {

inline constexpr std::string_view kEndOfTextText = "<|endoftext|>";

// A number no other tokenizer of this process has had (bpe.cpp).
uint64_t new_piece_cache_key();

struct BpeTokenizer::Impl {
  bpe::TokenTable tokens;
  bpe::PairTable pairs;
  uint32_t byte_id[256] = {};
  // Merge of two raw bytes (first row of every merge loop), indexed by (b0 << 8 | b1): 0xFFFF
  // where the pair is not a token.
  std::vector<uint16_t> byte_pair;
  int32_t eot_id = kEndOfText;
  // Tells this vocabulary's entries in the per-thread piece cache apart: unique per Impl.
  uint64_t cache_key = new_piece_cache_key();

  uint32_t byte_pair_rank(const char* p) const {
    const uint16_t r = byte_pair[(size_t(uint8_t(p[0])) << 8) | uint8_t(p[1])];
    return r == 0xFFFF ? bpe::PairTable::kNone : r;
  }

  // Loading (bpe.cpp): byte_id from `tokens`; the merge list checked against `tokens`;
  // find_pairs lists every split of an indexed token into two tokens (key: left << 16 | right,
  // value: the token), set_pairs builds `pairs` and `byte_pair` from that list.
  void find_byte_tokens(const std::string& origin);
  void check_merges(const std::vector<std::string>& merges, const std::string& origin,
                    const std::vector<int>& alphabet) const;
  void find_pairs(const std::vector<bool>& indexed, std::vector<uint32_t>& keys,
                  std::vector<uint32_t>& values) const;
  void set_pairs(const std::vector<uint32_t>& keys, const std::vector<uint32_t>& values);

  // Encoding (bpe_encode.cpp). The ids of `text` (valid UTF-8, no special tokens) are appended
  // to `out`; with `flush` set, a long piece hands its ids to it in batches as it goes.
  void encode_ordinary(std::string_view text, std::vector<int32_t>& out,
                       const IdsSink* flush = nullptr) const;
  void encode_piece(const char* p, size_t n, std::vector<int32_t>& out, const IdsSink* flush) const;
  void merge_small(const char* p, size_t n, std::vector<int32_t>& out) const;
  void merge_large(const char* p, size_t n, std::vector<int32_t>& out, const IdsSink* flush) const;
};

// The table cache (bpe_cache.cpp): a vocabulary's tokens and pair list in one binary file per
// pair of text files, keyed by their contents, so that later loads skip parsing and searching.
namespace bpe_cache {
// $LLMFT_CACHE_DIR/tokenizer, else $XDG_CACHE_HOME/llmft/tokenizer, else
// $HOME/.cache/llmft/tokenizer; empty when none is set.
std::filesystem::path folder();
uint64_t key_of(std::string_view vocab_text, std::string_view merges_text);
// The file for `key` in folder() (empty path when there is no folder).
std::filesystem::path file_for(uint64_t key);
// The tokenizer the file holds, or null when it is absent, unreadable, of another key or format,
// or fails its checks.
std::unique_ptr<BpeTokenizer::Impl> read(const std::filesystem::path& file, uint64_t key);
// Same, for the file's bytes (what read checks after reading them; the fuzz harness's entry).
std::unique_ptr<BpeTokenizer::Impl> parse(std::string_view bytes, uint64_t key);
// Writes the file atomically; failures are ignored (the next load reads the text files again).
void write(const std::filesystem::path& file, uint64_t key, const BpeTokenizer::Impl& impl,
           const std::vector<uint32_t>& pair_keys, const std::vector<uint32_t>& pair_values);
}  // namespace bpe_cache

}  // namespace llmft
