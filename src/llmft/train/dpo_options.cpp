// llmft dpo's options: finetune's where they apply with the DPO recipe's values, plus beta; see
// dpo.h.
#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/train/dpo.h"

namespace llmft {

using nlohmann::json;

FinetuneOptions DpoOptions::recipe() {
  FinetuneOptions o;
  o.data = data_dir() / "instruction-data-with-preference.json";
  o.lr = 5e-6;
  o.weight_decay = 0.01;
  o.epochs = 1;
  o.batch_size = 8;
  o.mask_prompt = true;
  o.offline_fallback = false;  // DPO starts from a finetuned model: never a random stand-in
  return o;
}

void DpoOptions::validate() const {
  train.validate();
  if (!(std::isfinite(beta) && beta > 0)) {
    throw UsageError(fmt::format("--beta {}: expected a positive number", beta),
                     "the reference uses 0.1");
  }
  if (train.grad_accum != 1 || train.prompt_template != "alpaca" || !train.mask_prompt) {
    throw UsageError("dpo runs the alpaca template with the prompt masked, in whole batches");
  }
}

json to_json(const DpoOptions& o) {
  json j = to_json(o.train);
  j["beta"] = o.beta;
  return j;
}

DpoOptions dpo_options_from_json(const json& j) {
  DpoOptions o;
  o.train = options_from_json(j);
  if (j.contains("beta")) {
    if (!j.at("beta").is_number()) {
      throw Error(fmt::format("config.json: field 'beta' has the wrong type: {}", j.at("beta").dump()));
    }
    o.beta = j.at("beta").get<double>();
  }
  return o;
}

}  // namespace llmft
