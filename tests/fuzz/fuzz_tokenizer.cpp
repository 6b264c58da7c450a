// The GPT-2 tokenizer on arbitrary bytes: encode (ordinary and with special tokens) must not
// crash, and decoding the ids must give the text back (after the U+FFFD repair of invalid UTF-8
// that encode applies first, as tiktoken's str input implies).
//
// An input that starts with the table cache's magic ("LLMFTBPE") is a cache file instead
// (bpe_cache.cpp) without its closing hash, which the harness appends so that the fuzzer reaches
// the checks behind it; the key is the file's own. A file the reader accepts must give a
// tokenizer whose ids of a fixed text join back into that text.
#include <cstdlib>
#include <cstring>

#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/tokenizer/bpe_impl.h"
#include "llmft/tokenizer/utf8.h"

namespace {

void cache_file(std::string_view body) {
  std::string bytes(body);
  const uint64_t sum = llmft::bpe::hash_bytes(bytes.data(), bytes.size());
  bytes.append(reinterpret_cast<const char*>(&sum), sizeof sum);
  uint64_t key = 0;  // magic, version, tokens, <|endoftext|>, pairs, then the key
  if (body.size() >= 32) std::memcpy(&key, body.data() + 24, sizeof key);
  const auto impl = llmft::bpe_cache::parse(bytes, key);
  if (!impl) return;
  const std::string_view text = "hello, world! Grüße 123 <|endoftext|>\n  x";
  std::vector<int32_t> ids;
  impl->encode_ordinary(text, ids);
  std::string back;
  for (int32_t id : ids) back += impl->tokens.token(static_cast<uint32_t>(id));
  if (back != text) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = llmft::fuzz::as_text(data, size);
  if (text.starts_with("LLMFTBPE")) {
    cache_file(text);
    return 0;
  }
  static const llmft::BpeTokenizer tok = llmft::BpeTokenizer::load_bundled();
  const std::vector<int32_t> ids = tok.encode(text, llmft::SpecialTokens::kOrdinary);
  if (tok.decode_bytes(ids) != llmft::utf8::replace_invalid(text)) std::abort();
  try {
    tok.encode(text, llmft::SpecialTokens::kAllow);
  } catch (const llmft::Error&) {
  }
  return 0;
}
