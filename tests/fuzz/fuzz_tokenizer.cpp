// The GPT-2 tokenizer on arbitrary bytes: encode (ordinary and with special tokens) must not
// crash, and decoding the ids must give the text back (after the U+FFFD repair of invalid UTF-8
// that encode applies first, as tiktoken's str input implies).
#include <cstdlib>

#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/tokenizer/utf8.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const llmft::BpeTokenizer tok = llmft::BpeTokenizer::load_bundled();
  const std::string_view text = llmft::fuzz::as_text(data, size);
  const std::vector<int32_t> ids = tok.encode(text, llmft::SpecialTokens::kOrdinary);
  if (tok.decode_bytes(ids) != llmft::utf8::replace_invalid(text)) std::abort();
  try {
    tok.encode(text, llmft::SpecialTokens::kAllow);
  } catch (const llmft::Error&) {
  }
  return 0;
}
