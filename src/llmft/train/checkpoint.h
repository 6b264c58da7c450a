// Resumable training checkpoints inside a run folder:
//   <run>/checkpoints/step-000123/{model.safetensors, optimizer.safetensors, state.json,
//                                  metrics.jsonl}
//   <run>/checkpoints/latest        (the name of the newest complete checkpoint)
// A checkpoint is written into a temporary folder, renamed into place, and only then named in
// `latest` (atomic replace); older ones are deleted after that. So a kill -9 at any instant leaves
// `latest` naming a complete checkpoint. model.safetensors holds the trained tensors under their
// file names (a full model: Hugging Face's GPT-2 names, so it loads in transformers; LoRA: PEFT's
// adapter names); optimizer.safetensors holds AdamW's m and v as "m.<name>", "v.<name>".
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>

#include <nlohmann/json.hpp>

#include "llmft/model/params.h"

namespace llmft {

// Where the loop stood when the checkpoint was taken (after `step` optimizer updates).
struct TrainState {
  int64_t step = 0;            // optimizer updates done so far
  int64_t epoch = 0;           // 0-based epoch the next batch belongs to
  int64_t batch_in_epoch = 0;  // batches of that epoch already consumed
  int64_t tokens_seen = 0;
  int64_t adam_step = 0;       // AdamW's t (bias-correction counter)
  double train_seconds = 0;    // wall time spent training so far (for the summary)
  nlohmann::json extra = nlohmann::json::object();  // RNG states and anything else to restore
};

nlohmann::json to_json(const TrainState& s);
TrainState train_state_from_json(const nlohmann::json& j, const std::string& origin);

// Writes a checkpoint of `params` and AdamW's `m`, `v` (all laid out by `table`), `state` and a
// copy of the metrics log, then points `latest` at it and removes older checkpoints.
// Returns the checkpoint folder.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, const TensorTable& table,
                                      std::span<const float> params, std::span<const float> m,
                                      std::span<const float> v, const TrainState& state,
                                      const std::filesystem::path& metrics_file);

// The folder `latest` names, or nullopt when the run has no checkpoint. Throws Error when
// `latest` names a folder that is missing.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir);

// Reads a checkpoint back into params/m/v (laid out by `table`) and restores `metrics_file`
// from the checkpoint's copy. Throws Error naming the file on any mismatch.
TrainState load_checkpoint(const std::filesystem::path& ckpt_dir, const TensorTable& table,
                           std::span<float> params, std::span<float> m, std::span<float> v,
                           const std::filesystem::path& metrics_file);

}  // namespace llmft
