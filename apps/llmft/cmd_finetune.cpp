// `llmft finetune`: the reference instruction-finetuning recipe end to end (SPEC §3, §6, §7).
// Parses options, installs the Ctrl-C handler, runs the trainer, prints where everything went.
#include <nlohmann/json.hpp>

#include "command.h"
#include "stop_signal.h"
#include "train_cli.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/judge/judge.h"
#include "llmft/train/options.h"
#include "llmft/train/trainer.h"

namespace llmft::app {
namespace {

// Adds the judge's result to the run's summary.json (written by the trainer before judging).
void record_judge(const std::filesystem::path& run_dir, const JudgeOptions& judge,
                  const JudgeSummary& s) {
  const auto path = run_dir / "summary.json";
  nlohmann::json j = parse_json(read_file(path), path.string());
  j["judge"] = {{"model", judge.model},
                {"url", judge.url},
                {"scored", s.stats.count},
                {"entries", s.total},
                {"average_score", s.stats.count ? nlohmann::json(s.stats.mean) : nlohmann::json()},
                {"scores_file", s.output.filename().string()}};
  write_file_atomic(path, j.dump(2) + "\n");
}

// The recipe's last step (SPEC §8): score the test answers when a judge answers at the URL, and
// record the average in summary.json.
void judge_answers(JudgeOptions judge, const std::filesystem::path& answers) {
  judge.input = answers;
  const std::string later = fmt::format("llmft judge --input {} --url {} --model {}",
                                        answers.string(), judge.url, judge.model);
  if (!judge_available(judge)) {
    fmt::print("\nNo judge LLM answers at {} with model {}. To score the test answers later:\n"
               "  ollama serve & ollama pull {}\n  {}\n",
               judge.url, judge.model, judge.model, later);
    return;
  }
  fmt::print("\nScoring the test answers with {} at {}\n", judge.model, judge.url);
  try {
    const JudgeSummary s = judge_file(judge);
    fmt::print("{}", format_summary(s));
    record_judge(answers.parent_path(), judge, s);
  } catch (const Error& e) {
    // Training succeeded; a judge failure must not hide that. Say what happened and how to resume.
    fmt::print(stderr, "llmft: judge stopped: {}\nresume with: {}\n", e.what(), later);
  }
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<FinetuneOptions>();
  auto resume = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto data = std::make_shared<std::string>();
  auto no_test_answers = std::make_shared<bool>(false);
  auto offline = std::make_shared<bool>(false);
  auto no_fallback = std::make_shared<bool>(false);
  auto untied = std::make_shared<bool>(false);
  auto judge = std::make_shared<JudgeOptions>();
  auto no_judge = std::make_shared<bool>(false);

  // A repeated option takes its last value (scripts append overrides).
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  // Options that define the run; with --resume they come from the run's config.json instead.
  std::vector<CLI::Option*> run_opts;
  auto add = [&](CLI::Option* opt) {
    run_opts.push_back(opt->capture_default_str());
    return opt;
  };
  add(app.add_option("--model", o->model,
                     "Model: gpt2, gpt2-medium, gpt2-large, gpt2-xl (hub cache, downloaded when "
                     "missing), a Hugging Face folder, or random:<tiny|small|gpt2|gpt2-medium...> "
                     "for a randomly initialised model"));
  add(app.add_option("--data", *data,
                     "Dataset (.json array or .jsonl) of Alpaca entries, chat `messages` or "
                     "prompt/completion (docs/data.md); default: the bundled "
                     "instruction-data.json (1,100 entries)"));
  add(app.add_option("--template", o->prompt_template, "Prompt template")
          ->check(CLI::IsMember({"alpaca", "phi3"})));
  add(app.add_flag("--mask-prompt", o->mask_prompt,
                   "Learn only the response: prompt targets are ignored in the loss"));
  add(app.add_option("--max-length", o->max_length,
                     "Truncate each padded batch's inputs and targets to this many tokens"));
  add(app.add_option("--batch-size", o->batch_size, "Examples per optimizer step"));
  add(app.add_option("--grad-accum", o->grad_accum,
                     "Split each batch into this many micro-batches (same result, less memory; "
                     "the loss is normalised by the unmasked tokens of the whole batch)"));
  add(app.add_option("--epochs", o->epochs, "Passes over the training split"));
  add(app.add_option("--max-steps", o->max_steps,
                     "Stop after this many optimizer steps (0 = use --epochs)"));
  add(app.add_option("--lr", o->lr, "AdamW learning rate (peak rate with a schedule)"));
  add(app.add_option("--weight-decay", o->weight_decay,
                     "AdamW decoupled weight decay (every tensor, as the reference)"));
  add(app.add_option("--warmup-steps", o->warmup_steps, "Linear warmup steps"));
  add(app.add_option("--schedule", o->schedule, "Learning-rate schedule after warmup")
          ->check(CLI::IsMember({"constant", "linear", "cosine"})));
  add(app.add_option("--grad-clip", o->grad_clip,
                     "Clip the global gradient norm to this value (0 = off)"));
  add(app.add_option("--dropout", o->dropout, "Dropout rate (the recipe uses 0)"));
  add(app.add_option("--eval-freq", o->eval_freq,
                     "Evaluate every N optimizer steps (after step 0, N, 2N, ...)"));
  add(app.add_option("--eval-batches", o->eval_batches,
                     "Batches of the train and validation loaders per evaluation"));
  add(app.add_option("--precision", o->precision,
                     "Matrix products in fp32 (PyTorch's numbers) or bf16 (about 2x faster on CPUs "
                     "with AVX512-BF16 or AMX; fp32 weights, gradients and optimizer state)")
          ->check(CLI::IsMember({"fp32", "bf16"})));
  add(app.add_option("--seed", o->seed, "Seed for initialisation, shuffling and dropout"));
  add(app.add_flag("--tied", o->tied, "Share the output head with the token embedding"));
  add(app.add_flag("--untied", *untied,
                   "Separate output head, a copy of the token embedding (the reference; default)"));
  add(app.add_flag("--offline", *offline, "Never download; use the hub cache or a folder only"));
  add(app.add_flag("--no-fallback", *no_fallback,
                   "Fail instead of training a random small model when the named model is not "
                   "available"));
  add_checkpoint_options(app, *o, add);
  add_lora_options(app, *o, add);
  add(app.add_option("--max-new-tokens", o->max_new_tokens,
                     "Token limit for each test-set answer"));
  add(app.add_flag("--no-test-answers", *no_test_answers,
                   "Skip answering the test split (test-responses.json)"));
  add(app.add_option("--sample-tokens", o->sample_tokens,
                     "Greedy tokens generated from the first validation prompt after each epoch"));
  add(app.add_option("--output,-o", *output,
                     "Run folder for every output (default: runs/<date>-<time>)"));
  app.add_option("--judge-url", judge->url,
                 "After the test answers, score them with the judge LLM (Ollama API) at this URL "
                 "when it answers there; otherwise print how to run `llmft judge` later")
      ->capture_default_str();
  app.add_option("--judge-model", judge->model, "Judge model name on that server")
      ->capture_default_str();
  app.add_flag("--no-judge", *no_judge,
               "Do not look for a judge after training (a resumed run keeps the judge options "
               "it was started with unless given again)");
  add_resume_options(app, *o, *resume,
                     "Continue the run in this folder from its last checkpoint (its config.json "
                     "holds the options; only --threads and the judge options may be given, and "
                     "a larger --max-steps or --epochs to train a finished run on)");

  return [=, &app]() -> int {
    FinetuneOptions opts = *o;
    std::filesystem::path resume_dir;
    if (!resume->empty()) {
      resume_dir = *resume;
      opts = options_from_json(resume_options(
          run_opts, resume_dir, "finetune",
          "a resumed run keeps the options in its config.json; only --threads, the judge "
          "options and (to extend it) --max-steps and --epochs may change"));
      keep_resume_settings(app, *o, resume_dir, opts);
      // The recorded judge, unless options given now override it (naming a judge judges).
      if (app.count("--judge-url")) opts.judge_url = judge->url;
      if (app.count("--judge-model")) opts.judge_model = judge->model;
      if (app.count("--judge-url") || app.count("--judge-model")) opts.judge = true;
      if (*no_judge) opts.judge = false;
    } else {
      opts.judge_url = judge->url;
      opts.judge_model = judge->model;
      opts.judge = !*no_judge;
      if (!data->empty()) opts.data = *data;
      if (!output->empty()) opts.output = *output;
      if (*untied && opts.tied) throw UsageError("--tied and --untied contradict each other");
      opts.test_answers = !*no_test_answers;
      opts.allow_download = !*offline;
      opts.offline_fallback = !*no_fallback;
      check_lora_options(app, opts);
    }
    opts.validate();
    const FinetuneResult r = run_finetune(opts, resume_dir, install_stop_handler());
    remove_stop_handler();
    if (r.interrupted) return stop_exit_code();
    if (r.finished_before) return 0;
    const auto answers = r.run_dir / "test-responses.json";
    if (opts.test_answers && opts.judge && std::filesystem::exists(answers)) {
      JudgeOptions j = *judge;
      if (!opts.judge_url.empty()) j.url = opts.judge_url;
      if (!opts.judge_model.empty()) j.model = opts.judge_model;
      judge_answers(j, answers);
    }
    return 0;
  };
}

const Registration reg{"finetune",
                       "Instruction-finetune a GPT-2 model (the reference recipe by default)",
                       setup};

}  // namespace
}  // namespace llmft::app
