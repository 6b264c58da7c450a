// `llmft data stats FILE`: loads and checks a dataset, tokenizes it, and prints entry counts,
// split sizes, exact duplicates, entries longer than the context, token lengths per split and the
// padding overhead of one training epoch.
#include <fmt/format.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "command.h"
#include "llmft/data/dataset.h"
#include "llmft/data/loader.h"
#include "llmft/data/stats.h"
#include "llmft/data/template.h"
#include "llmft/data/tokenized.h"
#include "llmft/tokenizer/bpe.h"
#include "llmft/train/options.h"

namespace llmft::app {
namespace {

struct StatsOptions {
  std::string file;
  std::string prompt_template = "alpaca";
  int64_t batch_size = 8;
  bool mask_prompt = false;
  int64_t max_length = FinetuneOptions{}.max_length;  // finetune's default (0: the context only)
  int64_t context = 1024;  // the model's context length (every GPT-2 size: 1024)
  uint64_t seed = 123;
  int threads = 0;
};

void print_row(const char* name, const LengthStats& s) {
  fmt::print("{:<6} {:>8} {:>8} {:>5} {:>7} {:>7.1f} {:>5}\n", name, s.count, s.total, s.min,
             fmt::format("{:g}", s.median), s.mean, s.max);
}

int run_stats(const StatsOptions& o) {
  const PromptTemplate tpl = parse_template(o.prompt_template);
  const InstructionDataset ds = load_dataset(o.file);
  const DatasetSplits sp = split_dataset(ds.size());
  const BpeTokenizer tok = BpeTokenizer::load_bundled();
  const TokenizedDataset td = tokenize_dataset(ds, tpl, tok, o.threads);

  fmt::print("dataset  {}\n", o.file);
  fmt::print("entries  {} (train {}, test {}, val {}; template {})\n", ds.size(), sp.train.size(),
             sp.test.size(), sp.val.size(), template_name(tpl));
  const ExactDuplicates dup = exact_duplicates(ds);
  fmt::print("exact duplicates  {} entries repeat an earlier entry ({} in another split); same "
             "instruction {}, same non-empty input {}, same output {}\n",
             dup.entries, dup.cross_split, dup.instruction, dup.input, dup.output);
  // As finetune crops: to the smaller of --max-length and the model's context.
  const int64_t limit = o.max_length > 0 ? std::min(o.max_length, o.context) : o.context;
  fmt::print("length limit  {} tokens (--max-length {}, context {}): {}\n\n", limit,
             o.max_length, o.context, describe_truncation(truncation(td, limit), ds.size()));
  fmt::print("training-text tokens (prompt + response)\n");
  fmt::print("{:<6} {:>8} {:>8} {:>5} {:>7} {:>7} {:>5}\n", "split", "entries", "tokens", "min",
             "median", "mean", "max");
  print_row("train", length_stats(td, sp.train));
  print_row("test", length_stats(td, sp.test));
  print_row("val", length_stats(td, sp.val));
  print_row("all", length_stats(td, {0, ds.size()}));
  fmt::print("\nprompt tokens\n");
  print_row("all", length_stats(td, {0, ds.size()}, /*prompts=*/true));

  CollateOptions co;
  co.mask_prompt = o.mask_prompt;
  co.allowed_max_length = limit;
  const DataLoader train(td, sp.train, train_loader_options(o.batch_size, o.seed, co));
  const EpochTokens e = epoch_tokens(train, /*epoch=*/0);
  fmt::print("\none training epoch: {} batches of {} (seed {}, last incomplete batch dropped{}, "
             "max length {})\n",
             e.batches, o.batch_size, o.seed, o.mask_prompt ? ", prompt masked" : "", limit);
  fmt::print("  real tokens     {:>9}\n", e.real_tokens);
  fmt::print("  padded tokens   {:>9}  ({:+.1f}% padding overhead)\n", e.padded_tokens,
             e.padding_overhead_percent());
  fmt::print("  packed tokens   {:>9}  (no padding: {:.1f}% less work than padded)\n",
             e.packed_tokens,
             e.padded_tokens ? 100.0 * static_cast<double>(e.padded_tokens - e.packed_tokens) /
                                   static_cast<double>(e.padded_tokens)
                             : 0.0);
  fmt::print("  trained targets {:>9}\n", e.target_tokens);
  return 0;
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<StatsOptions>();
  app.require_subcommand(1);
  CLI::App* stats = app.add_subcommand(
      "stats", "Check a dataset and print split sizes, token lengths and padding overhead");
  stats->add_option("FILE", o->file,
                    "Dataset (.json array or .jsonl): Alpaca, chat messages or prompt/completion")
      ->required();
  stats->add_option("--template", o->prompt_template, "Prompt template")
      ->check(CLI::IsMember({"alpaca", "phi3"}))
      ->capture_default_str();
  // Integer ranges: CLI11's PositiveNumber prints its bound as a 300-digit double.
  stats->add_option("--batch-size", o->batch_size, "Training batch size")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  stats->add_flag("--mask-prompt", o->mask_prompt, "Ignore the prompt's targets in the loss")
      ->capture_default_str();
  stats->add_option("--max-length", o->max_length,
                    "Truncate batches to this many tokens, as finetune's --max-length (0 = the "
                    "context only)")
      ->check(CLI::Range(0, 1 << 30))
      ->capture_default_str();
  stats->add_option("--context", o->context,
                    "The model's context length, for counting longer entries (GPT-2: 1024)")
      ->check(CLI::Range(1, 1 << 30))
      ->capture_default_str();
  stats->add_option("--seed", o->seed, "Seed of the training-set shuffle")->capture_default_str();
  stats->add_option("--threads", o->threads, "Tokenizer threads (0 = all cores)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  return [o, stats]() -> int {
    if (stats->parsed()) return run_stats(*o);
    return 2;
  };
}

const Registration reg{"data", "Inspect instruction datasets (stats)", setup};

}  // namespace
}  // namespace llmft::app
