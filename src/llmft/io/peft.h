// LoRA adapters in PEFT's folder layout (FACTS-phase2 §2), so they load with
// PeftModel.from_pretrained(GPT2LMHeadModel, dir) and PEFT's adapters load here:
//   adapter_config.json        peft_type LORA, task_type CAUSAL_LM, r, lora_alpha, lora_dropout,
//                              target_modules, fan_in_fan_out true (GPT-2's Conv1D), ...
//   adapter_model.safetensors  base_model.model.transformer.h.{l}.{module}.lora_{A,B}.weight
//                              (and base_model.model.lm_head.lora_{A,B}.weight), F32
#pragma once

#include <filesystem>
#include <memory>
#include <string>

#include "llmft/model/config.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/lora.h"

namespace llmft {

// Writes the adapter folder: a new folder built beside `dir` and renamed into place (an existing
// one is replaced file by file, atomically). base_model: what base_model_name_or_path records.
void write_peft_adapter(const std::filesystem::path& dir, const Lora& lora,
                        const std::string& base_model);

struct PeftAdapter {
  std::unique_ptr<Lora> lora;  // never null; its weights are the file's
  std::string base_model;      // base_model_name_or_path, "" when absent
};

// Reads an adapter folder written by llmft or by PEFT for a model of configuration `cfg`. The
// adapted layers come from the tensors in the file (target_modules must agree); rank, alpha,
// dropout and rsLoRA from the config. Throws Error naming the file for what llmft cannot run
// (DoRA, trained biases, per-layer ranks, modules_to_save, unknown tensors) and for shapes that
// do not fit `cfg` (an adapter made for another base model).
PeftAdapter read_peft_adapter(const std::filesystem::path& dir, const Gpt2Config& cfg);

// The base model with every adapter's delta scale * (B @ A)^T added to its weight (PEFT's
// merge_and_unload), as a new model without adapters. With a head adapter the merged head is no
// longer the embedding: a tied base gives an untied model.
std::unique_ptr<Gpt2> merged_model(const Gpt2& base, const Lora& lora);

}  // namespace llmft
