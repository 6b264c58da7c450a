// A checkpoint's state.json as load_checkpoint reads it, on arbitrary bytes; and the run record
// (config.json's "model") that a resumed run rebuilds its model from, without allocating it.
#include <nlohmann/json.hpp>

#include "fuzz_util.h"
#include "llmft/core/error.h"
#include "llmft/core/json.h"
#include "llmft/model/config.h"
#include "llmft/train/checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = llmft::fuzz::as_text(data, size);
  try {
    llmft::check_json_limits(text, "state.json");
    const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return 0;
    try {
      llmft::train_state_from_json(j, "state.json");
    } catch (const llmft::Error&) {
    }
    if (j.is_object() && j.contains("config")) llmft::gpt2_config_from_json(j["config"], "config.json");
  } catch (const llmft::Error&) {
  }
  return 0;
}
