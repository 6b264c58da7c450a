// Resumable training checkpoints inside a run folder:
//   <run>/checkpoints/step-000123/{model.safetensors, optimizer.safetensors, state.json,
//                                  metrics.jsonl}
//   <run>/checkpoints/latest        (the name of the newest complete checkpoint)
// A checkpoint is written into a temporary folder (each file synced to the disk), renamed into
// place, and only then named in `latest` (atomic replace); then all but it and the one before it
// are deleted. So a kill -9 or a power cut at any instant leaves a complete checkpoint, and
// resuming takes the newest complete one. model.safetensors holds the trained tensors under their
// file names (a full model: Hugging Face's GPT-2 names, so it loads in transformers; LoRA: PEFT's
// adapter names); optimizer.safetensors holds AdamW's m and v as "m.<name>", "v.<name>".
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

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
// copy of the metrics log, with each file's sha256 recorded in state.json, then points `latest` at
// it and removes older checkpoints.
// Returns the checkpoint folder.
std::filesystem::path save_checkpoint(const std::filesystem::path& run_dir, const TensorTable& table,
                                      std::span<const float> params, std::span<const float> m,
                                      std::span<const float> v, const TrainState& state,
                                      const std::filesystem::path& metrics_file);

// The newest complete checkpoint, or nullopt when the run has none. Half-written ones (temporary
// folders of a write that was cut short) are ignored.
std::optional<std::filesystem::path> latest_checkpoint(const std::filesystem::path& run_dir);
// Every complete checkpoint folder, newest (highest step) first. save_checkpoint keeps two.
std::vector<std::filesystem::path> checkpoints_newest_first(const std::filesystem::path& run_dir);

// Checks a checkpoint folder against the sha256 of each file its state.json records (written
// last, so a complete checkpoint always has them). Returns "" when they match or when state.json
// records none (a checkpoint from before checksums), else one line naming the damaged file and
// both hashes.
std::string checkpoint_damage(const std::filesystem::path& ckpt_dir);

// What --resume loads: the newest complete checkpoint that passes checkpoint_damage. A damaged
// newest one is reported on stderr and the older kept one is used (saying so); nullopt when the run
// has no checkpoint; throws Error naming the damaged file when none verifies.
std::optional<std::filesystem::path> resumable_checkpoint(const std::filesystem::path& run_dir);

// Reads a checkpoint back into params/m/v (laid out by `table`) and restores `metrics_file` (when
// not empty) from the checkpoint's copy. Throws Error naming the file on any mismatch. Checksums
// are resumable_checkpoint's job (so a resumed checkpoint is hashed once).
TrainState load_checkpoint(const std::filesystem::path& ckpt_dir, const TensorTable& table,
                           std::span<float> params, std::span<float> m, std::span<float> v,
                           const std::filesystem::path& metrics_file);

}  // namespace llmft
