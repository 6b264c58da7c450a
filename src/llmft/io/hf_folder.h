// GPT-2 weights in Hugging Face's layout (SPEC §5): tensor names as ParamTable's, with or without
// the "transformer." prefix, and a model folder (config.json, model.safetensors, vocab.json,
// merges.txt) that transformers loads as GPT2LMHeadModel.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "llmft/model/config.h"
#include "llmft/model/gpt2.h"
#include "llmft/model/params.h"

namespace llmft {

// What load_gpt2_weights found besides the parameters.
struct LoadInfo {
  // The file had no lm_head.weight but the table is untied: lm_head was set to a copy of wte,
  // as the reference recipe does with OpenAI's tied checkpoint (SPEC §4).
  bool lm_head_from_wte = false;
  bool prefixed = false;            // names carried the "transformer." prefix
  int64_t ignored_buffers = 0;      // h.{i}.attn.bias / h.{i}.attn.masked_bias skipped
  int64_t converted_tensors = 0;    // tensors stored as F16/BF16/F64, converted to fp32
};

// Fills `params` (laid out by `table`) from a safetensors file. Throws Error naming the file and
// the tensor for a missing, unexpected or wrongly shaped tensor. A tied table accepts a file
// lm_head.weight only when it equals wte bit for bit.
LoadInfo load_gpt2_weights(const std::filesystem::path& file, const ParamTable& table,
                           std::span<float> params);

// Writes params as F32 safetensors with the names GPT2LMHeadModel.save_pretrained uses:
// "transformer." + table name for the body, "lm_head.weight" (untied only), metadata
// {"format": "pt"} (which transformers requires) plus `metadata`. Atomic.
void save_gpt2_weights(const std::filesystem::path& file, const ParamTable& table,
                       std::span<const float> params,
                       const std::map<std::string, std::string>& metadata = {});

// config.json <-> Gpt2Config. Parsing rejects what the model cannot run (another model_type or
// activation, n_inner != 4 * n_embd, ...) with an Error naming `origin` and the field.
std::string hf_config_json(const Gpt2Config& cfg);
Gpt2Config parse_hf_config(const std::string& text, const std::string& origin);
Gpt2Config read_hf_config(const std::filesystem::path& dir);  // dir/config.json

// Checks, before a model of `cfg` is allocated, that `weights` (a safetensors file) is large
// enough to hold its parameters at one byte each: a config saying n_layer 1000000000 is an Error
// naming `origin` instead of allocating until the process is killed. Also refuses a `weights`
// that is not a regular file (a FIFO would block the open).
void check_weights_fit(const Gpt2Config& cfg, const std::filesystem::path& weights,
                       const std::string& origin);

struct HfTokenizerFiles {
  std::filesystem::path vocab_json;  // GPT-2's encoder.json under Hugging Face's name
  std::filesystem::path merges_txt;  // GPT-2's vocab.bpe under Hugging Face's name
};
// The bundled data/gpt2/encoder.json and data/gpt2/vocab.bpe.
HfTokenizerFiles bundled_tokenizer_files();

// Writes config.json, generation_config.json, tokenizer_config.json, model.safetensors,
// vocab.json and merges.txt. A new folder is built beside `dir` and renamed into place; an existing
// one gets each file replaced atomically (config.json last). cfg must be table.config().
void write_hf_folder(const std::filesystem::path& dir, const Gpt2Config& cfg,
                     const ParamTable& table, std::span<const float> params,
                     const HfTokenizerFiles& tokenizer = bundled_tokenizer_files());

struct HfModel {
  Gpt2 model;  // the folder's configuration, its weights read straight into the model
  LoadInfo info;
};
// Reads config.json and model.safetensors. `tied` overrides the file's tie_word_embeddings
// (false = the reference recipe's untied head, copied from wte when the file has none);
// `dropout` the configuration's dropout rate (resid_pdrop).
HfModel read_hf_folder(const std::filesystem::path& dir, std::optional<bool> tied = std::nullopt,
                       std::optional<float> dropout = std::nullopt);

}  // namespace llmft
