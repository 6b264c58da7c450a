#include "llmft/io/hf_folder.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/io/safetensors.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kPrefix = "transformer.";
constexpr int kEosId = 50256;  // <|endoftext|>, GPT-2's bos and eos

// "h.{digits}.attn.bias" / "h.{digits}.attn.masked_bias": causal-mask buffers, not parameters.
bool is_attn_buffer(const std::string& name) {
  if (name.rfind("h.", 0) != 0) return false;
  size_t i = 2;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9') ++i;
  if (i == 2) return false;
  const std::string rest = name.substr(i);
  return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

std::string shape_str(const std::vector<int64_t>& s) {
  return fmt::format("[{}]", fmt::join(s, ", "));
}

// float -> the shortest decimal that reads back as the same float (1e-05, not 9.99999974e-06).
double float_for_json(float f) { return std::stod(fmt::format("{}", f)); }

}  // namespace

LoadInfo load_gpt2_weights(const fs::path& file, const ParamTable& table, std::span<float> params) {
  LLMFT_CHECK(params.size() >= static_cast<size_t>(table.total()), "params buffer too small: {} < {}",
              params.size(), table.total());
  const SafetensorsFile st(file);
  const std::string p = file.string();
  const std::string hint_cfg = "the weights do not match config.json's model size";
  LoadInfo info;
  std::vector<const TensorInfo*> slot(table.specs().size(), nullptr);
  const TensorInfo* file_lm_head = nullptr;  // a file lm_head.weight for a tied table
  for (const auto& t : st.tensors()) {
    std::string name = t.name;
    if (name.rfind(kPrefix, 0) == 0) {
      name = name.substr(std::strlen(kPrefix));
      info.prefixed = true;
    }
    if (is_attn_buffer(name)) {
      ++info.ignored_buffers;
      continue;
    }
    const ParamSpec* spec = table.find(name);
    if (!spec) {
      if (name == "lm_head.weight" && table.config().tied) {
        file_lm_head = &t;
        continue;
      }
      throw Error(fmt::format("{}: unexpected tensor '{}' (shape {}): GPT-2 has no such parameter",
                              p, t.name, shape_str(t.shape)),
                  "this is not a GPT-2 checkpoint, or it is a newer variant llmft does not know");
    }
    const size_t idx = static_cast<size_t>(spec - table.specs().data());
    if (slot[idx]) {
      throw Error(fmt::format("{}: tensor '{}' appears twice ('{}' and '{}')", p, name,
                              slot[idx]->name, t.name));
    }
    slot[idx] = &t;
  }
  // In table order, so the first error reported is the first tensor of the model.
  for (size_t i = 0; i < slot.size(); ++i) {
    const ParamSpec& spec = table.specs()[i];
    if (!slot[i]) {
      if (spec.name == "lm_head.weight") continue;
      throw Error(fmt::format("{}: missing tensor '{}' (shape {}) for {}", p, spec.name,
                              shape_str(spec.shape), table.config().describe()), hint_cfg);
    }
    if (slot[i]->shape != spec.shape) {
      throw Error(fmt::format("{}: tensor '{}' has shape {}, expected {} for {}", p,
                              slot[i]->name, shape_str(slot[i]->shape), shape_str(spec.shape),
                              table.config().describe()), hint_cfg);
    }
  }
  for (size_t i = 0; i < slot.size(); ++i) {
    if (!slot[i]) continue;
    if (slot[i]->dtype != Dtype::F32) ++info.converted_tensors;
    st.read_f32(*slot[i], table.view(params, table.specs()[i]));
    require_finite(p, slot[i]->name, table.view(std::span<const float>(params), table.specs()[i]));
  }
  const ParamSpec* wte = table.find("wte.weight");
  if (const ParamSpec* head = table.find("lm_head.weight");
      head && !slot[static_cast<size_t>(head - table.specs().data())]) {
    const auto src = table.view(std::span<const float>(params), *wte);
    std::copy(src.begin(), src.end(), table.view(params, *head).begin());
    info.lm_head_from_wte = true;
  }
  if (file_lm_head) {
    if (file_lm_head->shape != wte->shape) {
      throw Error(fmt::format("{}: tensor 'lm_head.weight' has shape {}, expected {}", p,
                              shape_str(file_lm_head->shape), shape_str(wte->shape)), hint_cfg);
    }
    std::vector<float> head(static_cast<size_t>(file_lm_head->numel));
    st.read_f32(*file_lm_head, head);
    const auto w = table.view(std::span<const float>(params), *wte);
    if (std::memcmp(head.data(), w.data(), head.size() * sizeof(float)) != 0) {
      throw Error(fmt::format("{}: has a separate lm_head.weight that differs from wte.weight, but "
                              "the model is tied", p),
                  "load it untied (tie_word_embeddings false) to keep the trained output head");
    }
  }
  return info;
}

void save_gpt2_weights(const fs::path& file, const ParamTable& table, std::span<const float> params,
                       const std::map<std::string, std::string>& metadata) {
  LLMFT_CHECK(params.size() >= static_cast<size_t>(table.total()), "params buffer too small: {} < {}",
              params.size(), table.total());
  // GPT2LMHeadModel's own state dict (table.file_name): body under "transformer.", the head at
  // top level; transformers only routes a separate lm_head correctly when the body is prefixed.
  const std::vector<TensorToWrite> tensors = table_tensors(table, params);
  std::map<std::string, std::string> meta = metadata;
  meta["format"] = "pt";
  write_safetensors(file, tensors, meta);
}

std::string hf_config_json(const Gpt2Config& cfg) {
  const double drop = float_for_json(cfg.dropout);
  nlohmann::ordered_json j;
  j["activation_function"] = "gelu_new";
  j["architectures"] = {"GPT2LMHeadModel"};
  j["attn_pdrop"] = drop;
  j["bos_token_id"] = kEosId;
  j["embd_pdrop"] = drop;
  j["eos_token_id"] = kEosId;
  j["initializer_range"] = 0.02;
  j["layer_norm_epsilon"] = float_for_json(cfg.ln_eps);
  j["model_type"] = "gpt2";
  j["n_ctx"] = cfg.maxT;
  j["n_embd"] = cfg.C;
  j["n_head"] = cfg.NH;
  j["n_inner"] = nullptr;
  j["n_layer"] = cfg.L;
  j["n_positions"] = cfg.maxT;
  j["reorder_and_upcast_attn"] = false;
  j["resid_pdrop"] = drop;
  j["scale_attn_by_inverse_layer_idx"] = false;
  j["scale_attn_weights"] = true;
  j["summary_activation"] = nullptr;
  j["summary_first_dropout"] = 0.1;
  j["summary_proj_to_labels"] = true;
  j["summary_type"] = "cls_index";
  j["summary_use_proj"] = true;
  j["tie_word_embeddings"] = cfg.tied;
  j["torch_dtype"] = "float32";
  j["use_cache"] = true;
  j["vocab_size"] = cfg.V;
  return j.dump(2) + "\n";
}

Gpt2Config parse_hf_config(const std::string& text, const std::string& origin) {
  const json j = parse_json(text, origin,
                            "the model folder's config.json is damaged: restore or download it "
                            "again");
  if (!j.is_object()) throw Error(fmt::format("{}: must be a JSON object", origin));
  const auto field_error = [&](const std::string& key, const std::string& expected) {
    const std::string got = j.contains(key) ? j[key].dump() : std::string("nothing");
    return Error(fmt::format("{}: field '{}' must be {}, got {}", origin, key, expected, got),
                 "is this a GPT-2 model folder?");
  };
  const auto get_int = [&](const std::string& key) -> int64_t {
    if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() <= 0)
      throw field_error(key, "a positive integer");
    return j[key].get<int64_t>();
  };
  const auto get_float = [&](const std::string& key, double dflt, double lo, double hi) -> float {
    if (!j.contains(key)) return static_cast<float>(dflt);
    if (!j[key].is_number() || !(j[key].get<double>() >= lo && j[key].get<double>() < hi))
      throw field_error(key, fmt::format("a number in [{}, {})", lo, hi));
    return static_cast<float>(j[key].get<double>());
  };
  const auto get_bool = [&](const std::string& key, bool dflt) -> bool {
    if (!j.contains(key)) return dflt;
    if (!j[key].is_boolean()) throw field_error(key, "true or false");
    return j[key].get<bool>();
  };
  if (j.contains("model_type") && j["model_type"] != "gpt2") throw field_error("model_type", "\"gpt2\"");
  if (j.contains("activation_function") && j["activation_function"] != "gelu_new" &&
      j["activation_function"] != "gelu_pytorch_tanh") {
    throw field_error("activation_function", "\"gelu_new\" (GPT-2's tanh GELU)");
  }
  Gpt2Config cfg;
  cfg.V = get_int("vocab_size");
  cfg.maxT = j.contains("n_positions") ? get_int("n_positions") : get_int("n_ctx");
  cfg.C = get_int("n_embd");
  cfg.L = get_int("n_layer");
  cfg.NH = get_int("n_head");
  if (j.contains("n_inner") && !j["n_inner"].is_null() &&
      !(j["n_inner"].is_number_integer() && j["n_inner"].get<int64_t>() == 4 * cfg.C)) {
    throw field_error("n_inner", fmt::format("null or 4 * n_embd = {}", 4 * cfg.C));
  }
  cfg.ln_eps = get_float("layer_norm_epsilon", 1e-5, 1e-30, 1.0);
  // One dropout rate in llmft; the reference recipe sets all three alike.
  cfg.dropout = get_float("resid_pdrop", 0.1, 0.0, 1.0);
  cfg.tied = get_bool("tie_word_embeddings", true);  // transformers' default
  if (!get_bool("scale_attn_weights", true)) throw field_error("scale_attn_weights", "true");
  if (get_bool("scale_attn_by_inverse_layer_idx", false))
    throw field_error("scale_attn_by_inverse_layer_idx", "false");
  if (get_bool("add_cross_attention", false)) throw field_error("add_cross_attention", "false");
  try {
    cfg.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", origin, e.what()), e.hint());
  }
  return cfg;
}

Gpt2Config read_hf_config(const fs::path& dir) {
  const fs::path file = dir / "config.json";
  std::error_code ec;
  if (!fs::exists(file, ec)) {
    throw Error(fmt::format("{}: not a model folder: no config.json", dir.string()),
                "pass a folder written by llmft or a Hugging Face GPT-2 folder, or a model name "
                "(gpt2, gpt2-medium, gpt2-large, gpt2-xl)");
  }
  if (!fs::is_regular_file(file, ec)) throw Error(fmt::format("{}: not a regular file", file.string()));
  return parse_hf_config(read_file(file), file.string());
}

HfTokenizerFiles bundled_tokenizer_files() {
  return {data_dir() / "gpt2" / "encoder.json", data_dir() / "gpt2" / "vocab.bpe"};
}

void write_hf_folder(const fs::path& dir, const Gpt2Config& cfg, const ParamTable& table,
                     std::span<const float> params, const HfTokenizerFiles& tokenizer) {
  LLMFT_CHECK(cfg.describe() == table.config().describe(), "config {} vs table {}",
              cfg.describe(), table.config().describe());
  // Read the tokenizer files first: a missing one must fail before anything is written.
  const std::string vocab = read_file(tokenizer.vocab_json);
  const std::string merges = read_file(tokenizer.merges_txt);
  write_folder_atomic(dir, [&](const fs::path& out) {
    write_file_atomic(out / "vocab.json", vocab);
    write_file_atomic(out / "merges.txt", merges);
    write_file_atomic(out / "tokenizer_config.json",
                      fmt::format("{{\n  \"model_max_length\": {},\n  \"tokenizer_class\": "
                                  "\"GPT2Tokenizer\"\n}}\n", cfg.maxT));
    write_file_atomic(out / "generation_config.json",
                      fmt::format("{{\n  \"bos_token_id\": {},\n  \"eos_token_id\": {}\n}}\n",
                                  kEosId, kEosId));
    save_gpt2_weights(out / "model.safetensors", table, params, {{"producer", "llmft " LLMFT_VERSION}});
    write_file_atomic(out / "config.json", hf_config_json(cfg));
  });
}

void check_weights_fit(const Gpt2Config& cfg, const fs::path& weights, const std::string& origin) {
  std::error_code ec;
  const auto st = fs::status(weights, ec);
  if (ec || !fs::exists(st)) {
    throw Error(fmt::format("{}: cannot open: {}", weights.string(),
                            ec ? ec.message() : std::string("no such file")));
  }
  if (!fs::is_regular_file(st)) throw Error(fmt::format("{}: not a regular file", weights.string()));
  // In doubles: the sizes of a hostile config overflow int64.
  const double V = static_cast<double>(cfg.V), C = static_cast<double>(cfg.C);
  const double params = V * C * (cfg.tied ? 1 : 2) + static_cast<double>(cfg.maxT) * C +
                        static_cast<double>(cfg.L) * (12 * C * C + 13 * C) + 2 * C;
  const double bytes = static_cast<double>(fs::file_size(weights, ec));
  if (ec || params > bytes) {
    throw Error(fmt::format("{}: {} makes {:.3g} parameters, more than {} ({:.3g} bytes) can hold",
                            origin, cfg.describe(), params, weights.string(), bytes),
                "the configuration does not belong to these weights; restore it");
  }
}

HfModel read_hf_folder(const fs::path& dir, std::optional<bool> tied,
                       std::optional<float> dropout) {
  Gpt2Config cfg = read_hf_config(dir);
  if (tied) cfg.tied = *tied;
  if (dropout) cfg.dropout = *dropout;
  const fs::path weights = dir / "model.safetensors";
  std::error_code ec;
  if (!fs::exists(weights, ec)) {
    std::string hint = "the folder needs model.safetensors beside config.json";
    if (fs::exists(dir / "model.safetensors.index.json", ec))
      hint = "sharded checkpoints are not supported: save it as one model.safetensors";
    else if (fs::exists(dir / "pytorch_model.bin", ec))
      hint = "only safetensors is read: convert pytorch_model.bin with transformers' save_pretrained";
    throw Error(fmt::format("{}: no model.safetensors", dir.string()), hint);
  }
  check_weights_fit(cfg, weights, (dir / "config.json").string());
  HfModel m{Gpt2(cfg), {}};
  m.info = load_gpt2_weights(weights, m.model.table(), m.model.params());
  return m;
}

}  // namespace llmft
