// GPT-2 byte-level BPE, identical to tiktoken's "gpt2" encoding (SPEC §2).
// Golden: tests/data/tokenizer/*.jsonl (ids produced by tiktoken).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace llmft {

// How a literal "<|endoftext|>" in the text is treated.
enum class SpecialTokens {
  kDisallow,  // an Error (tiktoken's default)
  kAllow,     // becomes id 50256
  kOrdinary,  // encoded as plain text
};

// A vocabulary as its files hold it: the token strings in GPT-2's byte alphabet by id ("Ġthe")
// and the merge lines ("Ġ t"; a first line "#version..." and empty lines are skipped). GGUF
// stores it this way.
struct BpeVocabStrings {
  std::vector<std::string> tokens, merges;
  std::string origin, merges_origin;  // name the sources in errors (file paths)
  // A folder's vocab.json + merges.txt (Hugging Face) or encoder.json + vocab.bpe (OpenAI).
  static BpeVocabStrings read_folder(const std::filesystem::path& dir);
};

class BpeTokenizer {
 public:
  static constexpr int32_t kEndOfText = 50256;

  // The bundled vocabulary (data/gpt2/encoder.json + vocab.bpe).
  static BpeTokenizer load_bundled();
  // One process-wide instance of the bundled vocabulary, loaded on first use (thread-safe; later
  // changes of $LLMFT_DATA_DIR are not seen). Use it instead of loading again and again.
  static const BpeTokenizer& bundled();
  // OpenAI's files (encoder.json + vocab.bpe) or Hugging Face's (vocab.json + merges.txt).
  static BpeTokenizer load_files(const std::filesystem::path& encoder_json,
                                 const std::filesystem::path& merges);
  // A folder with vocab.json + merges.txt (Hugging Face) or encoder.json + vocab.bpe (OpenAI).
  static BpeTokenizer load_folder(const std::filesystem::path& dir);
  // From token strings and merges (a GGUF file's). Throws Error naming v.origin when they are not
  // a byte-level BPE vocabulary (a token outside GPT-2's alphabet, a duplicate, a missing byte or
  // <|endoftext|>, a merge of unknown tokens).
  static BpeTokenizer from_strings(const BpeVocabStrings& v);

  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;
  ~BpeTokenizer();

  // Text must be UTF-8; invalid sequences are replaced by U+FFFD first (WHATWG rule).
  std::vector<int32_t> encode(std::string_view text,
                              SpecialTokens special = SpecialTokens::kDisallow) const;
  // Many texts at once, over `threads` threads (0 = all cores). Same results as encode().
  std::vector<std::vector<int32_t>> encode_batch(std::span<const std::string> texts,
                                                 SpecialTokens special = SpecialTokens::kDisallow,
                                                 int threads = 0) const;
  // Raw bytes of the tokens joined (may be invalid UTF-8 mid-stream). Throws on an id >= vocab.
  std::string decode_bytes(std::span<const int32_t> ids) const;
  // decode_bytes with invalid UTF-8 shown as U+FFFD, as tiktoken's decode does.
  std::string decode(std::span<const int32_t> ids) const;
  int32_t vocab_size() const;

 private:
  struct Impl;
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmft
