#include "llmft/train/options.h"

#include <fmt/format.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/model/lora.h"
#include "llmft/model/precision.h"
#include "llmft/train/schedule.h"

namespace llmft {

namespace {
template <typename T>
void require(bool ok, const char* flag, const T& value, const char* expected) {
  if (!ok) throw UsageError(fmt::format("{} {}: expected {}", flag, value, expected));
}
}  // namespace

void FinetuneOptions::validate() const {
  require(!model.empty(), "--model", "''", "a model name, folder or random:<preset>");
  require(prompt_template == "alpaca" || prompt_template == "phi3", "--template", prompt_template,
          "alpaca or phi3");
  require(max_length >= 2, "--max-length", max_length, "an integer >= 2");
  require(dropout >= 0 && dropout < 1, "--dropout", dropout, "0 <= dropout < 1");
  require(batch_size >= 1, "--batch-size", batch_size, "an integer >= 1");
  require(grad_accum >= 1, "--grad-accum", grad_accum, "an integer >= 1");
  if (batch_size % grad_accum != 0) {
    throw UsageError(fmt::format("--grad-accum {} does not divide --batch-size {}", grad_accum,
                                 batch_size),
                     "--batch-size is the examples per optimizer step; it is split into "
                     "--grad-accum equal micro-batches");
  }
  require(epochs >= 1, "--epochs", epochs, "an integer >= 1");
  require(max_steps >= 0, "--max-steps", max_steps, "an integer >= 0 (0 = use --epochs)");
  require(std::isfinite(lr) && lr > 0, "--lr", lr, "a positive number");
  require(std::isfinite(weight_decay) && weight_decay >= 0, "--weight-decay", weight_decay,
          "a number >= 0");
  require(beta1 >= 0 && beta1 < 1, "beta1", beta1, "0 <= beta1 < 1");
  require(beta2 >= 0 && beta2 < 1, "beta2", beta2, "0 <= beta2 < 1");
  require(eps > 0, "eps", eps, "a positive number");
  require(warmup_steps >= 0, "--warmup-steps", warmup_steps, "an integer >= 0");
  parse_lr_schedule(schedule);
  require(std::isfinite(grad_clip) && grad_clip >= 0, "--grad-clip", grad_clip,
          "a number > 0, or 0 for off");
  require(eval_freq >= 1, "--eval-freq", eval_freq, "an integer >= 1");
  require(eval_batches >= 1, "--eval-batches", eval_batches, "an integer >= 1");
  parse_precision(precision);
  require(threads >= 0, "--threads", threads, "an integer >= 0 (0 = all cores)");
  require(checkpoint_every >= 0, "--checkpoint-every", checkpoint_every,
          "an integer >= 0 (0 = at epoch ends only)");
  require(std::isfinite(checkpoint_minutes) && checkpoint_minutes >= 0, "--checkpoint-minutes",
          checkpoint_minutes, "a number >= 0 (0 = off)");
  require(max_new_tokens >= 1, "--max-new-tokens", max_new_tokens, "an integer >= 1");
  require(sample_tokens >= 0, "--sample-tokens", sample_tokens, "an integer >= 0");
  if (!lora && (!adapter.empty() || merge))
    throw UsageError(fmt::format("{} needs --lora", adapter.empty() ? "--merge" : "--adapter"),
                     "add --lora to train an adapter");
  if (lora) {
    require(lora_rank >= 1 && lora_rank <= 4096, "--lora-rank", lora_rank, "an integer in 1..4096");
    require(lora_alpha > 0, "--lora-alpha", lora_alpha, "a number > 0");
    require(lora_dropout >= 0 && lora_dropout < 1, "--lora-dropout", lora_dropout, "a number in [0, 1)");
    parse_lora_targets(lora_targets);  // throws UsageError naming a bad entry
  }
}

std::filesystem::path FinetuneOptions::data_path() const {
  return data.empty() ? data_dir() / "instruction-data.json" : data;
}

nlohmann::json to_json(const FinetuneOptions& o) {
  return {
      {"model", o.model},
      {"data", o.data_path().string()},
      {"template", o.prompt_template},
      {"mask_prompt", o.mask_prompt},
      {"max_length", o.max_length},
      {"tied", o.tied},
      {"dropout", o.dropout},
      {"allow_download", o.allow_download},
      {"offline_fallback", o.offline_fallback},
      {"batch_size", o.batch_size},
      {"grad_accum", o.grad_accum},
      {"epochs", o.epochs},
      {"max_steps", o.max_steps},
      {"lr", o.lr},
      {"weight_decay", o.weight_decay},
      {"beta1", o.beta1},
      {"beta2", o.beta2},
      {"eps", o.eps},
      {"warmup_steps", o.warmup_steps},
      {"schedule", o.schedule},
      {"grad_clip", o.grad_clip},
      {"eval_freq", o.eval_freq},
      {"eval_batches", o.eval_batches},
      {"seed", o.seed},
      {"threads", o.threads},
      {"precision", o.precision},
      {"output", o.output.string()},
      {"checkpoint_every", o.checkpoint_every},
      {"checkpoint_minutes", o.checkpoint_minutes},
      {"max_new_tokens", o.max_new_tokens},
      {"test_answers", o.test_answers},
      {"sample_tokens", o.sample_tokens},
      {"judge", o.judge},
      {"judge_url", o.judge_url},
      {"judge_model", o.judge_model},
      {"lora", o.lora},
      {"lora_rank", o.lora_rank},
      {"lora_alpha", o.lora_alpha},
      {"lora_dropout", o.lora_dropout},
      {"lora_targets", o.lora_targets},
      {"lora_layers", o.lora_layers},
      {"lora_rslora", o.lora_rslora},
      {"adapter", o.adapter.string()},
      {"merge", o.merge},
  };
}

FinetuneOptions options_from_json(const nlohmann::json& j) {
  FinetuneOptions o;
  auto get = [&](const char* key, auto& field) {
    if (!j.contains(key)) return;
    try {
      field = j.at(key).get<std::remove_reference_t<decltype(field)>>();
    } catch (const nlohmann::json::exception&) {
      throw Error(fmt::format("config.json: field '{}' has the wrong type: {}", key,
                              j.at(key).dump()));
    }
  };
  std::string data, output;
  get("model", o.model);
  get("data", data);
  get("template", o.prompt_template);
  get("mask_prompt", o.mask_prompt);
  get("max_length", o.max_length);
  get("tied", o.tied);
  get("dropout", o.dropout);
  get("allow_download", o.allow_download);
  get("offline_fallback", o.offline_fallback);
  get("batch_size", o.batch_size);
  get("grad_accum", o.grad_accum);
  get("epochs", o.epochs);
  get("max_steps", o.max_steps);
  get("lr", o.lr);
  get("weight_decay", o.weight_decay);
  get("beta1", o.beta1);
  get("beta2", o.beta2);
  get("eps", o.eps);
  get("warmup_steps", o.warmup_steps);
  get("schedule", o.schedule);
  get("grad_clip", o.grad_clip);
  get("eval_freq", o.eval_freq);
  get("eval_batches", o.eval_batches);
  get("seed", o.seed);
  get("threads", o.threads);
  get("precision", o.precision);
  get("output", output);
  get("checkpoint_every", o.checkpoint_every);
  get("checkpoint_minutes", o.checkpoint_minutes);
  get("max_new_tokens", o.max_new_tokens);
  get("test_answers", o.test_answers);
  get("sample_tokens", o.sample_tokens);
  get("judge", o.judge);
  get("judge_url", o.judge_url);
  get("judge_model", o.judge_model);
  std::string adapter;
  get("lora", o.lora);
  get("lora_rank", o.lora_rank);
  get("lora_alpha", o.lora_alpha);
  get("lora_dropout", o.lora_dropout);
  get("lora_targets", o.lora_targets);
  get("lora_layers", o.lora_layers);
  get("lora_rslora", o.lora_rslora);
  get("adapter", adapter);
  get("merge", o.merge);
  o.adapter = adapter;
  o.data = data;
  o.output = output;
  return o;
}

nlohmann::json optimizer_json(const FinetuneOptions& o) {
  return {{"lr", o.lr},
          {"schedule", o.schedule},
          {"warmup_steps", o.warmup_steps},
          {"weight_decay", o.weight_decay},
          {"grad_clip", o.grad_clip > 0 ? nlohmann::json(o.grad_clip) : nlohmann::json(nullptr)}};
}

std::string describe_optimizer(const FinetuneOptions& o) {
  return fmt::format("AdamW, lr {:g} ({}{}), weight decay {:g}, grad clip {}", o.lr, o.schedule,
                     o.warmup_steps > 0 ? fmt::format(", {} warm-up steps", o.warmup_steps) : "",
                     o.weight_decay, o.grad_clip > 0 ? fmt::format("{:g}", o.grad_clip) : "off");
}

}  // namespace llmft
