// llmft finetune's model choices on top of io's load_model, and the run record of its model.
#include "llmft/train/model_source.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/io/hf_folder.h"

namespace llmft {

using nlohmann::json;

LoadedModel load_finetune_model(const FinetuneOptions& opts,
                                const std::function<void(const std::string&)>& log) {
  ModelLoadOptions o;
  o.allow_download = opts.allow_download;
  o.allow_random = true;
  o.fallback_to_random = opts.offline_fallback;
  o.tied = opts.tied;
  o.dropout = static_cast<float>(opts.dropout);
  o.tokenizer = TokenizerSource::kBundled;
  o.log = log;
  return load_model(opts.model, o);
}

json model_record(const LoadedModel& m, int64_t parameters) {
  return {{"source", m.spec},
          {"pretrained", m.pretrained},
          {"fallback", m.fallback},
          {"description", m.description},
          {"parameters", parameters},
          {"config", to_json(m.cfg())}};
}

namespace {
// record["model"], checked to be an object.
const json& model_entry(const json& record, const std::string& origin) {
  if (!record.is_object() || !record.contains("model") || !record["model"].is_object()) {
    throw Error(fmt::format("{}: no \"model\" record", origin),
                "--resume takes the run folder of an earlier llmft finetune");
  }
  return record["model"];
}
// r[key], which must be of the kind is_kind accepts.
const json& record_field(const json& r, const char* key, bool (json::*is_kind)() const,
                         const char* kind, const std::string& origin) {
  if (!r.contains(key) || !(r[key].*is_kind)()) {
    throw Error(fmt::format("{}: model.{} is {}, expected {}", origin, key,
                            r.contains(key) ? r[key].dump() : "missing", kind),
                "the run's config.json was changed; restore it from the run's start");
  }
  return r[key];
}
}  // namespace

Gpt2Config recorded_config(const json& record, const std::string& origin) {
  return gpt2_config_from_json(
      record_field(model_entry(record, origin), "config", &json::is_object, "an object", origin),
      origin);
}

LoadedModel model_from_record(const json& record, const std::string& origin,
                              const std::filesystem::path& weights) {
  const json& r = model_entry(record, origin);
  auto field = [&](const char* key, bool (json::*is_kind)() const, const char* kind) {
    return record_field(r, key, is_kind, kind, origin);
  };
  LoadedModel m;
  const Gpt2Config cfg = recorded_config(record, origin);
  if (!weights.empty()) check_weights_fit(cfg, weights, origin);
  m.model = std::make_unique<Gpt2>(cfg);
  m.pretrained = field("pretrained", &json::is_boolean, "true or false").get<bool>();
  m.fallback = field("fallback", &json::is_boolean, "true or false").get<bool>();
  m.spec = field("source", &json::is_string, "a string").get<std::string>();
  m.description = field("description", &json::is_string, "a string").get<std::string>();
  m.tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::load_bundled());
  return m;
}

}  // namespace llmft
