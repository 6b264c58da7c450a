// Options and checks shared by the training commands; see train_cli.h.
#include "train_cli.h"

#include <fmt/format.h>

#include "llmft/core/error.h"
#include "llmft/core/io.h"

namespace llmft::app {

void add_lora_options(CLI::App& app, FinetuneOptions& o, const AddRunOption& add) {
  add(app.add_flag("--lora", o.lora,
                   "Train LoRA adapters beside the frozen model instead of the model itself "
                   "(far less memory and time; the run writes adapter/ in PEFT's layout)"));
  add(app.add_option("--lora-rank", o.lora_rank, "LoRA rank r of each adapter"));
  add(app.add_option("--lora-alpha", o.lora_alpha,
                     "LoRA alpha: adapters are scaled by alpha / rank, as PEFT does"));
  add(app.add_option("--lora-dropout", o.lora_dropout,
                     "Dropout on each adapter's input while training (PEFT's lora_dropout)"));
  add(app.add_option("--lora-targets", o.lora_targets,
                     "Layers that get adapters: c_attn, attn.c_proj, c_fc, mlp.c_proj, head "
                     "(c_proj: both projections; all: every one)"));
  add(app.add_option("--adapter", o.adapter,
                     "With --lora: continue training this adapter folder (PEFT layout; its rank, "
                     "alpha and targets replace the --lora-* options)"));
  add(app.add_flag("--merge", o.merge,
                   "With --lora: also write the merged full model (model/) beside adapter/"));
}

void check_lora_options(const CLI::App& app, const FinetuneOptions& o) {
  if (o.adapter.empty()) return;
  for (const char* flag : {"--lora-rank", "--lora-alpha", "--lora-dropout", "--lora-targets"})
    if (app.count(flag))
      throw UsageError(fmt::format("{} cannot be combined with --adapter", flag),
                       "the adapter's own settings are used; leave the option out");
}

nlohmann::json read_run_config(const std::filesystem::path& dir, const std::string& command) {
  const auto file = dir / "config.json";
  auto j = nlohmann::json::parse(read_file(file), nullptr, false);
  // Runs of the first releases have no "command": they are finetune runs.
  if (j.is_discarded() || !j.is_object() || !j.contains("options") ||
      j.value("command", std::string("finetune")) != command) {
    throw Error(fmt::format("{}: not a llmft {} run", file.string(), command),
                fmt::format("--resume takes the run folder of an earlier llmft {}", command));
  }
  return j;
}

}  // namespace llmft::app
