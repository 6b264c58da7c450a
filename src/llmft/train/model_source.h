// Where `llmft finetune` gets its starting weights: a named GPT-2 (hub cache or download), a
// Hugging Face folder, or "random:<preset>" (GPT-2's initialisation, real 50,257-token vocabulary),
// through io's load_model; or, resuming, the run's own record of its model (weights: checkpoint).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "llmft/io/model_loader.h"
#include "llmft/train/options.h"

namespace llmft {

// opts.model with the recipe's choices: random presets allowed; when a named model can be neither
// found nor downloaded, random:small (opts.offline_fallback) so that every step still runs, saying
// plainly through `log` that the result is not a pretrained model; opts.tied and opts.dropout;
// the bundled tokenizer (the run writes it beside the finetuned model).
LoadedModel load_finetune_model(const FinetuneOptions& opts,
                                const std::function<void(const std::string&)>& log);

// The "model" record of a run's config.json: source, pretrained, fallback, description,
// parameters (the count) and config (model/config.h's mapping).
nlohmann::json model_record(const LoadedModel& m, int64_t parameters);
// A resumed run's model, from that record: the shape as recorded (the named model might resolve
// differently now), no weights (the checkpoint has them), the bundled tokenizer. Throws Error
// naming `origin` and the field when the record is missing or mistyped.
// The model shape of that record, checked as model_from_record checks it, without allocating.
Gpt2Config recorded_config(const nlohmann::json& record, const std::string& origin);
// `weights`, when given, is the safetensors file the weights will come from: the recorded shape
// must fit in it (check_weights_fit) before the model is allocated.
LoadedModel model_from_record(const nlohmann::json& record, const std::string& origin,
                              const std::filesystem::path& weights = {});

}  // namespace llmft
