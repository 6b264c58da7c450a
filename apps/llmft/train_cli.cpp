// Options and checks shared by the training commands; see train_cli.h.
#include "train_cli.h"

#include <fmt/format.h>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"

namespace llmft::app {

void add_checkpoint_options(CLI::App& app, FinetuneOptions& o, const AddRunOption& add) {
  add(app.add_option("--checkpoint-every", o.checkpoint_every,
                     "Also checkpoint every N optimizer steps (0 = off; checkpoints are always "
                     "written at the end of each epoch, at the end and on Ctrl-C, SIGTERM or "
                     "SIGHUP)"));
  add(app.add_option("--checkpoint-minutes", o.checkpoint_minutes,
                     "Also checkpoint when this many minutes of training passed since the last "
                     "checkpoint, so a kill or power cut loses at most that (0 = off; the two "
                     "newest checkpoints are kept)"));
}

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

void add_resume_options(CLI::App& app, FinetuneOptions& o, std::string& resume,
                        const std::string& resume_help) {
  app.add_option("--threads", o.threads, "Threads (0 = all cores)")->capture_default_str();
  app.add_option("--resume", resume, resume_help);
  app.add_option("--interrupt-after-step", o.interrupt_after_step)->group("");
  app.add_option("--kill-after-step", o.kill_after_step)->group("");
  app.add_option("--term-after-step", o.term_after_step)->group("");
  app.add_flag("--term-after-training", o.term_after_training)->group("");
}

nlohmann::json resume_options(const std::vector<CLI::Option*>& run_opts,
                              const std::filesystem::path& dir, const std::string& command,
                              const std::string& hint) {
  for (const CLI::Option* opt : run_opts)
    if (opt->count() > 0 && opt->get_name() != "--max-steps" && opt->get_name() != "--epochs")
      throw UsageError(fmt::format("{} cannot be combined with --resume", opt->get_name()), hint);
  const auto file = dir / "config.json";
  const std::string text = read_file(file);
  auto j = parse_json(text, file.string());
  // Runs of the first releases have no "command": they are finetune runs.
  if (!j.is_object() || !j.contains("options") ||
      j.value("command", std::string("finetune")) != command) {
    throw Error(fmt::format("{}: not a llmft {} run", file.string(), command),
                fmt::format("--resume takes the run folder of an earlier llmft {}", command));
  }
  return j.at("options");
}

void keep_resume_settings(const CLI::App& app, const FinetuneOptions& cli,
                          const std::filesystem::path& dir, FinetuneOptions& run) {
  run.output = dir;
  if (app.count("--threads")) run.threads = cli.threads;
  if (app.count("--epochs")) {
    run.epochs = cli.epochs;
    run.max_steps = 0;
  }
  if (app.count("--max-steps")) run.max_steps = cli.max_steps;
  run.interrupt_after_step = cli.interrupt_after_step;
  run.kill_after_step = cli.kill_after_step;
  run.term_after_step = cli.term_after_step;
  run.term_after_training = cli.term_after_training;
}

}  // namespace llmft::app
