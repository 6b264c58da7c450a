// A safetensors file (8-byte header length, JSON header, data) on arbitrary bytes: the header and
// data checks, then every tensor read as fp32.
#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto path = llmft::fuzz::write_scratch("m.safetensors", llmft::fuzz::as_text(data, size));
  try {
    const llmft::SafetensorsFile f(path);
    for (const auto& t : f.tensors()) {
      if (t.numel > (1 << 20)) continue;  // the checks said the bytes are there; keep it fast
      std::vector<float> out(static_cast<size_t>(t.numel));
      f.read_f32(t, out);
    }
  } catch (const llmft::Error&) {
  }
  return 0;
}
