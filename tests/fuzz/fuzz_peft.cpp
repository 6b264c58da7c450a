// A PEFT LoRA adapter folder on arbitrary bytes: the input up to its first NUL byte is
// adapter_config.json, the rest adapter_model.safetensors; read against a tiny GPT-2 shape.
#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/io/peft.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = llmft::fuzz::as_text(data, size);
  const size_t nul = in.find('\0');
  llmft::fuzz::write_scratch("adapter_config.json", in.substr(0, nul));
  llmft::fuzz::write_scratch("adapter_model.safetensors",
                             nul == std::string_view::npos ? std::string_view() : in.substr(nul + 1));
  llmft::Gpt2Config cfg;
  cfg.V = 11, cfg.maxT = 8, cfg.C = 8, cfg.L = 2, cfg.NH = 2;
  try {
    llmft::read_peft_adapter(llmft::fuzz::scratch(), cfg);
  } catch (const llmft::Error&) {
  }
  return 0;
}
