// The GGUF reader on arbitrary bytes: header, metadata and tensor-info checks, GPT-2's config
// from the metadata, and every (small) tensor read as fp32.
#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = llmft::fuzz::write_scratch("m.gguf", llmft::fuzz::as_text(data, size));
  try {
    const llmft::GgufFile f(path);
    for (const auto& t : f.tensors()) {
      if (t.numel > (1 << 20)) continue;
      std::vector<float> out(static_cast<size_t>(t.numel));
      f.read_f32(t, out);
    }
    llmft::gpt2_config_from_gguf(f);
  } catch (const llmft::Error&) {
  }
  return 0;
}
