// PEFT adapter folders; see peft.h.
#include "llmft/io/peft.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/io/safetensors.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {
constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kWeightsFile = "adapter_model.safetensors";

// target_modules as PEFT matches them (by name suffix): "c_attn", "attn.c_proj", "c_fc",
// "mlp.c_proj", "lm_head" ("c_proj" alone would take both projections).
std::string target_module_name(LoraTarget t) {
  switch (t) {
    case LoraTarget::kCAttn: return "c_attn";
    case LoraTarget::kCFc: return "c_fc";
    default: return lora_module(t);
  }
}

json config_json(const LoraConfig& lc, const std::string& base_model) {
  std::vector<std::string> modules;
  for (LoraTarget t : lc.targets) modules.push_back(target_module_name(t));
  std::sort(modules.begin(), modules.end());
  // PEFT's LoraConfig fields (json sorts the keys, as PEFT's save_pretrained does).
  return {{"alpha_pattern", json::object()},
          {"base_model_name_or_path", base_model},
          {"bias", "none"},
          {"fan_in_fan_out", true},
          {"inference_mode", true},
          {"init_lora_weights", true},
          {"layers_pattern", lc.layers.empty() ? json(nullptr) : json("h")},
          {"layers_to_transform", lc.layers.empty() ? json(nullptr) : json(lc.layers)},
          {"lora_alpha", lc.alpha},
          {"lora_dropout", lc.dropout},
          {"modules_to_save", nullptr},
          {"peft_type", "LORA"},
          {"r", lc.rank},
          {"rank_pattern", json::object()},
          {"revision", nullptr},
          {"target_modules", modules},
          {"task_type", "CAUSAL_LM"},
          {"use_dora", false},
          {"use_rslora", lc.rslora}};
}

// (layer or -1, target) of a PEFT tensor name, and whether it is lora_A; nullopt for a name that
// is no LoRA weight of a GPT-2 module llmft adapts.
struct TensorKey {
  int64_t layer;
  LoraTarget target;
  bool is_a;
};
std::optional<TensorKey> parse_key(std::string name) {
  const std::string prefix = "base_model.model.";
  if (name.rfind(prefix, 0) != 0) return std::nullopt;
  name = name.substr(prefix.size());
  bool is_a;
  for (const char* suffix : {".lora_A.weight", ".lora_B.weight"}) {
    const std::string s = suffix;
    if (name.size() > s.size() && name.compare(name.size() - s.size(), s.size(), s) == 0) {
      is_a = s == ".lora_A.weight";
      name.resize(name.size() - s.size());
      if (name == "lm_head") return TensorKey{-1, LoraTarget::kHead, is_a};
      const std::string h = "transformer.h.";
      if (name.rfind(h, 0) != 0) return std::nullopt;
      const size_t dot = name.find('.', h.size());
      if (dot == std::string::npos || dot == h.size() || dot - h.size() > 6) return std::nullopt;
      const std::string digits = name.substr(h.size(), dot - h.size());
      if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return std::nullopt;
      const std::string module = name.substr(dot + 1);
      for (LoraTarget t : kBlockTargets)
        if (module == lora_module(t)) return TensorKey{std::stoll(digits), t, is_a};
      return std::nullopt;
    }
  }
  return std::nullopt;
}

// The config's settings llmft runs; an Error naming the file for the others.
LoraConfig parse_config(const json& j, const std::string& where) {
  auto fail = [&](const std::string& what, const std::string& hint = "") {
    throw Error(fmt::format("{}: {}", where, what), hint);
  };
  if (!j.is_object()) fail("not a JSON object");
  // j[key] or the default; compared as JSON (j.value(key, typed default) throws on another type).
  const auto opt = [&](const char* key, const json& dflt) { return j.contains(key) ? j[key] : dflt; };
  if (opt("peft_type", "") != "LORA")
    fail(fmt::format("peft_type is {}, not \"LORA\"", j.contains("peft_type") ? j["peft_type"].dump() : "missing"));
  if (j.contains("task_type") && !j["task_type"].is_null() && j["task_type"] != "CAUSAL_LM")
    fail(fmt::format("task_type is {}, not \"CAUSAL_LM\"", j["task_type"].dump()));
  LoraConfig lc;
  const json r = j.value("r", json(8));
  if (!r.is_number_integer() || r.get<int64_t>() < 1 || r.get<int64_t>() > 4096)
    fail(fmt::format("r is {}, not a rank in 1..4096", r.dump()));
  lc.rank = r.get<int64_t>();
  const json alpha = j.value("lora_alpha", json(8));
  if (!alpha.is_number() || !(alpha.get<double>() > 0)) fail(fmt::format("lora_alpha is {}", alpha.dump()));
  lc.alpha = alpha.get<double>();
  const json drop = j.value("lora_dropout", json(0.0));
  if (!drop.is_number() || drop.get<double>() < 0 || drop.get<double>() >= 1)
    fail(fmt::format("lora_dropout is {}", drop.dump()));
  lc.dropout = drop.get<double>();
  const json rslora = opt("use_rslora", false);
  if (!rslora.is_boolean()) fail(fmt::format("use_rslora is {}, expected true or false", rslora.dump()));
  lc.rslora = rslora.get<bool>();
  if (opt("use_dora", false) != false) fail("DoRA adapters (use_dora) are not supported");
  if (opt("bias", "none") != "none")
    fail(fmt::format("bias is {}: adapters that train biases are not supported", j["bias"].dump()));
  for (const char* k : {"rank_pattern", "alpha_pattern"})
    if (j.contains(k) && !j[k].is_null() && !j[k].empty())
      fail(fmt::format("{} is set: per-layer ranks and alphas are not supported", k));
  if (j.contains("modules_to_save") && !j["modules_to_save"].is_null() && !j["modules_to_save"].empty())
    fail("modules_to_save is set: adapters with fully trained modules are not supported");
  return lc;
}
}  // namespace

void write_peft_adapter(const fs::path& dir, const Lora& lora, const std::string& base_model) {
  write_folder_atomic(dir, [&](const fs::path& out) {
    write_safetensors(out / kWeightsFile, table_tensors(lora.table(), lora.params()),
                      {{"format", "pt"}});
    write_file_atomic(out / kConfigFile, config_json(lora.config(), base_model).dump(2) + "\n");
  });
}

PeftAdapter read_peft_adapter(const fs::path& dir, const Gpt2Config& cfg) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    throw Error(fmt::format("{}: no such adapter folder", dir.string()),
                "pass the folder that holds adapter_config.json and adapter_model.safetensors");
  const fs::path config_file = dir / kConfigFile;
  const std::string config_text = read_file(config_file);
  const json j = parse_json(config_text, config_file.string());
  LoraConfig lc = parse_config(j, config_file.string());
  PeftAdapter out;
  out.base_model = j.contains("base_model_name_or_path") && j["base_model_name_or_path"].is_string()
                       ? j["base_model_name_or_path"].get<std::string>()
                       : std::string();
  const fs::path weights = dir / kWeightsFile;
  if (!fs::exists(weights, ec)) {
    throw Error(fmt::format("{}: no {}", dir.string(), kWeightsFile),
                fs::exists(dir / "adapter_model.bin", ec)
                    ? "only safetensors adapters are read: save it with safe_serialization=True"
                    : "");
  }
  const SafetensorsFile st(weights);
  // The adapted layers are those with tensors in the file.
  std::set<int64_t> layers;
  std::set<LoraTarget> targets;
  std::set<std::pair<int64_t, LoraTarget>> pairs;
  for (const TensorInfo& t : st.tensors()) {
    const auto key = parse_key(t.name);
    if (!key)
      throw Error(fmt::format("{}: tensor '{}' is not a LoRA weight of a GPT-2 layer llmft adapts",
                              weights.string(), t.name),
                  "llmft adapts attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj and lm_head");
    if (key->layer >= cfg.L)
      throw Error(fmt::format("{}: tensor '{}' adapts layer {}, but the model has {} layers",
                              weights.string(), t.name, key->layer, cfg.L),
                  fmt::format("the adapter was made for another base model ({})",
                              out.base_model.empty() ? "not named" : out.base_model));
    if (key->layer >= 0) layers.insert(key->layer);
    targets.insert(key->target);
    pairs.insert({key->layer, key->target});
  }
  if (targets.empty()) throw Error(fmt::format("{}: holds no LoRA weights", weights.string()));
  lc.targets.assign(targets.begin(), targets.end());
  lc.layers.clear();
  if (static_cast<int64_t>(layers.size()) != cfg.L) lc.layers.assign(layers.begin(), layers.end());
  for (int64_t l : layers)
    for (LoraTarget t : targets)
      if (t != LoraTarget::kHead && !pairs.count({l, t}))
        throw Error(fmt::format("{}: layer {} has no {} adapter while other layers do",
                                weights.string(), l, lora_module(t)),
                    "llmft runs adapters that adapt the same modules in every adapted layer");
  if (j.contains("target_modules") && j["target_modules"].is_array()) {
    for (LoraTarget t : targets) {
      bool named = false;
      for (const json& m : j["target_modules"]) {
        if (!m.is_string()) continue;
        const std::string s = m.get<std::string>(), full = lora_module(t);
        named |= full == s || (full.size() > s.size() &&
                               full.compare(full.size() - s.size(), s.size(), s) == 0 &&
                               full[full.size() - s.size() - 1] == '.');
      }
      if (!named)
        throw Error(fmt::format("{}: holds {} adapters, but target_modules does not name them",
                                config_file.string(), lora_module(t)));
    }
  }
  out.lora = std::make_unique<Lora>(cfg, lc);
  const TensorTable& table = out.lora->table();
  for (const ParamSpec& s : table.specs()) {
    const TensorInfo* t = st.find(s.name);
    if (!t)
      throw Error(fmt::format("{}: tensor '{}' is missing", weights.string(), s.name));
    if (t->shape != s.shape) {
      auto str = [](const std::vector<int64_t>& v) { return json(v).dump(); };
      throw Error(fmt::format("{}: tensor '{}' has shape {}, expected {} for rank {} on {}",
                              weights.string(), s.name, str(t->shape), str(s.shape), lc.rank,
                              cfg.describe()),
                  fmt::format("the adapter was made for another base model ({})",
                              out.base_model.empty() ? "not named" : out.base_model));
    }
  }
  read_table(st, table, out.lora->params());
  return out;
}

std::unique_ptr<Gpt2> merged_model(const Gpt2& base, const Lora& lora) {
  Gpt2Config cfg = base.config();
  if (lora.config().has(LoraTarget::kHead)) cfg.tied = false;
  auto merged = std::make_unique<Gpt2>(cfg);
  const std::span<const float> from = base.params();
  const std::span<float> to = merged->params();
  for (const ParamSpec& s : merged->table().specs()) {
    const ParamSpec* f = base.table().find(s.name);
    if (!f) f = base.table().find("wte.weight");  // an untied head starts as the embedding
    const auto src = base.table().view(from, *f);
    std::copy(src.begin(), src.end(), merged->table().view(to, s).begin());
  }
  Gpt2Tensors<float> w = merged->weights();
  for (int64_t l = 0; l < cfg.L; ++l) {
    const BlockTensors<float>& b = w.h[static_cast<size_t>(l)];
    lora.add_delta(b.c_attn.w, l, LoraTarget::kCAttn);
    lora.add_delta(b.attn_proj.w, l, LoraTarget::kAttnProj);
    lora.add_delta(b.c_fc.w, l, LoraTarget::kCFc);
    lora.add_delta(b.mlp_proj.w, l, LoraTarget::kMlpProj);
  }
  lora.add_delta(w.lm_head, -1, LoraTarget::kHead);
  return merged;
}

}  // namespace llmft
