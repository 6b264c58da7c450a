// `llmft dpo`: direct preference optimisation of a finetuned model (SPEC §9). Parses options
// (finetune's names where they apply, plus --beta), installs the Ctrl-C handler, runs the loop.
#include <nlohmann/json.hpp>

#include "command.h"
#include "stop_signal.h"
#include "train_cli.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/train/dpo.h"

namespace llmft::app {
namespace {

Runner setup(CLI::App& app) {
  auto d = std::make_shared<DpoOptions>();
  FinetuneOptions* o = &d->train;
  auto resume = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto data = std::make_shared<std::string>();
  auto no_test_answers = std::make_shared<bool>(false);
  auto offline = std::make_shared<bool>(false);

  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::vector<CLI::Option*> run_opts;  // with --resume they come from the run's config.json
  auto add = [&](CLI::Option* opt) {
    run_opts.push_back(opt->capture_default_str());
    return opt;
  };
  run_opts.push_back(app.add_option("--model", o->model,
                     "The finetuned (SFT) model to tune: a Hugging Face folder such as a finetune "
                     "run's model/, a name (gpt2-medium...), or random:<preset> for tests. It is "
                     "also the frozen reference (required)"));
  add(app.add_option("--data", *data,
                     "Preference data: entries with instruction, input, output, chosen and "
                     "rejected (llmft prefs writes it); default: the bundled "
                     "instruction-data-with-preference.json (1,100 pairs)"));
  add(app.add_option("--beta", d->beta,
                     "DPO's beta: how strongly the loss pulls the policy's log-probability "
                     "margin away from the reference's"));
  add(app.add_option("--max-length", o->max_length,
                     "Crop each chosen and rejected text to this many tokens"));
  add(app.add_option("--batch-size", o->batch_size, "Preference pairs per optimizer step"));
  add(app.add_option("--epochs", o->epochs, "Passes over the training split"));
  add(app.add_option("--max-steps", o->max_steps,
                     "Stop after this many optimizer steps (0 = use --epochs)"));
  add(app.add_option("--lr", o->lr, "AdamW learning rate"));
  add(app.add_option("--weight-decay", o->weight_decay, "AdamW decoupled weight decay"));
  add(app.add_option("--grad-clip", o->grad_clip,
                     "Clip the global gradient norm to this value (0 = off)"));
  add(app.add_option("--eval-freq", o->eval_freq,
                     "Evaluate every N optimizer steps (after step 0, N, 2N, ...)"));
  add(app.add_option("--eval-batches", o->eval_batches,
                     "Batches of the train and validation loaders per evaluation"));
  add(app.add_option("--precision", o->precision,
                     "Matrix products in fp32 (PyTorch's numbers) or bf16 (faster on CPUs with "
                     "AVX512-BF16 or AMX; fp32 weights, gradients and optimizer state)")
          ->check(CLI::IsMember({"fp32", "bf16"})));
  add(app.add_option("--seed", o->seed, "Seed for shuffling (and a random model's weights)"));
  add(app.add_flag("--offline", *offline, "Never download a named model"));
  add_checkpoint_options(app, *o, add);
  add_lora_options(app, *o, add);
  add(app.add_option("--max-new-tokens", o->max_new_tokens,
                     "Token limit for each test-set answer"));
  add(app.add_flag("--no-test-answers", *no_test_answers,
                   "Skip answering the test split with the starting and the tuned model"));
  add(app.add_option("--sample-tokens", o->sample_tokens,
                     "Greedy tokens generated from the first validation prompt after each epoch"));
  add(app.add_option("--output,-o", *output,
                     "Run folder for every output (default: runs/<date>-<time>)"));
  add_resume_options(app, *o, *resume,
                     "Continue the run in this folder from its last checkpoint (its config.json "
                     "holds the options; only --threads may be given, and a larger --max-steps or "
                     "--epochs to train a finished run on)");

  return [=, &app]() -> int {
    DpoOptions opts = *d;
    std::filesystem::path resume_dir;
    if (!resume->empty()) {
      resume_dir = *resume;
      opts = dpo_options_from_json(resume_options(
          run_opts, resume_dir, "dpo",
          "a resumed run keeps the options in its config.json; only --threads and (to extend "
          "it) --max-steps and --epochs may change"));
      keep_resume_settings(app, *o, resume_dir, opts.train);
    } else {
      if (app.count("--model") == 0) {
        throw UsageError("--model is required", "name the finetuned model to tune, e.g. "
                                                "--model runs/<run>/model");
      }
      if (!data->empty()) opts.train.data = *data;
      if (!output->empty()) opts.train.output = *output;
      opts.train.test_answers = !*no_test_answers;
      opts.train.allow_download = !*offline;
      check_lora_options(app, opts.train);
    }
    opts.validate();
    const FinetuneResult r = run_dpo(opts, resume_dir, install_stop_handler());
    remove_stop_handler();
    return r.interrupted ? stop_exit_code() : 0;
  };
}

const Registration reg{"dpo",
                       "Preference-tune a finetuned model with DPO (the reference recipe by default)",
                       setup};

}  // namespace
}  // namespace llmft::app
