// A Hugging Face config.json on arbitrary bytes.
#include <string>

#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/io/hf_folder.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    llmft::parse_hf_config(std::string(llmft::fuzz::as_text(data, size)), "config.json");
  } catch (const llmft::Error&) {
  }
  return 0;
}
