// GPT-2 hyperparameters (SPEC §4). Letters as in llm.c: V vocab, maxT context, C channels,
// L layers, NH heads, HS = C / NH head size.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace llmft {

struct Gpt2Config {
  int64_t V = 50257;      // vocabulary size
  int64_t maxT = 1024;    // context length (n_positions)
  int64_t C = 768;        // embedding width (n_embd)
  int64_t L = 12;         // layers (n_layer)
  int64_t NH = 12;        // attention heads (n_head)
  float ln_eps = 1e-5f;   // LayerNorm epsilon
  float dropout = 0.0f;   // drop rate on embeddings, attention weights and residual branches
  bool tied = false;      // true: the output head is wte; false: a separate lm_head (reference)

  int64_t HS() const { return C / NH; }
  // "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl". Throws UsageError for other names.
  static Gpt2Config from_name(const std::string& name);
  // Throws Error when the shape is inconsistent (C % NH != 0, non-positive sizes).
  void validate() const;
  std::string describe() const;  // "L=24 C=1024 NH=16 V=50257 maxT=1024 untied"
};

bool is_known_model_name(const std::string& name);

// llmft's own record of a configuration (a run's config.json "model.config"):
// {"V", "maxT", "C", "L", "NH", "tied", "dropout"}. Hugging Face's config.json is another format
// (io/hf_folder.h). Reading throws Error naming `origin` and the key for a missing or mistyped
// field, and for a shape validate() rejects: such files can be hand-edited or truncated.
nlohmann::json to_json(const Gpt2Config& c);
Gpt2Config gpt2_config_from_json(const nlohmann::json& j, const std::string& origin);

}  // namespace llmft
