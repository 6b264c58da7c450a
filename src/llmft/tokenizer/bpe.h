// GPT-2 byte-level BPE, identical to tiktoken's "gpt2" encoding (SPEC §2).
// Golden: tests/data/tokenizer/*.jsonl (ids produced by tiktoken).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "llmft/core/error.h"

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
  // Where encode_stream reads its text: fills `buf` with up to buf.size() bytes and returns how
  // many; 0 means the text has ended.
  using TextSource = std::function<size_t(std::span<char> buf)>;
  // Where encode_stream puts the ids: called with the next ids, in order, in batches.
  using IdsSink = std::function<void(std::span<const int32_t> ids)>;
  static constexpr size_t kStreamChunk = size_t(1) << 20;
  // encode() of a text that is read piece by piece: the same ids, handed to `emit` as they are
  // made. It holds about 4 x chunk_bytes of text and ids, plus the longest pre-tokenizer piece
  // (its bytes and, while it is merged, 4 bytes per byte: docs/tokenizer.md), never the whole
  // text or all its ids. With kDisallow a literal <|endoftext|> throws special_token_error (the
  // byte offset counts the whole input) once it is read; ids of the text before it may have been
  // emitted by then.
  void encode_stream(const TextSource& read, const IdsSink& emit,
                     SpecialTokens special = SpecialTokens::kDisallow,
                     size_t chunk_bytes = kStreamChunk) const;
  // The error encode() throws (kDisallow) for a literal <|endoftext|> at byte `at` of the text.
  static Error special_token_error(uint64_t at);
  // Many texts at once, over `threads` threads (0 = all cores). Same results as encode().
  std::vector<std::vector<int32_t>> encode_batch(std::span<const std::string> texts,
                                                 SpecialTokens special = SpecialTokens::kDisallow,
                                                 int threads = 0) const;
  // Raw bytes of the tokens joined (may be invalid UTF-8 mid-stream). Throws on an id >= vocab.
  std::string decode_bytes(std::span<const int32_t> ids) const;
  // decode_bytes with invalid UTF-8 shown as U+FFFD, as tiktoken's decode does.
  std::string decode(std::span<const int32_t> ids) const;
  int32_t vocab_size() const;

  struct Impl;  // the tables (tokenizer/bpe_impl.h, private to the tokenizer module)

 private:
  explicit BpeTokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmft
