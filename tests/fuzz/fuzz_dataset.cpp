// The dataset loader (JSON array and JSONL) on arbitrary bytes.
#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes = llmft::fuzz::as_text(data, size);
  for (const char* name : {"in.json", "in.jsonl"}) {
    try {
      llmft::parse_dataset(bytes, name);
    } catch (const llmft::Error&) {
    }
  }
  return 0;
}
