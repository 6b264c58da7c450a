// The steps of a finetuning run before its model; see run_setup.h.
#include "llmft/train/run_setup.h"

#include <fmt/format.h>

#include <ctime>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/train/checkpoint.h"

namespace llmft {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string timestamp_name() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  localtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%d-%H%M%S", &tm);
  return buf;
}

}  // namespace

RunFolder resolve_run_folder(const FinetuneOptions& opts, const fs::path& resume_dir) {
  RunFolder f;
  f.resuming = !resume_dir.empty();
  f.dir = f.resuming ? resume_dir
                     : (opts.output.empty() ? fs::path("runs") / timestamp_name() : opts.output);
  f.config_file = f.dir / "config.json";
  f.metrics_file = f.dir / "metrics.jsonl";
  std::error_code ec;
  if (!f.resuming && fs::exists(f.config_file, ec)) {
    throw UsageError(
        fmt::format("{} already holds a finetuning run", f.dir.string()),
        "continue it with --resume " + f.dir.string() + ", or choose another --output");
  }
  if (f.resuming) {
    f.saved_config = json::parse(read_file(f.config_file), nullptr, false);
    f.checkpoint = latest_checkpoint(f.dir);
    if (!f.checkpoint) {
      throw Error(fmt::format("{}: no checkpoint to resume from", f.dir.string()),
                  "the run stopped before its first checkpoint; start it again");
    }
  }
  return f;
}

// Loads and splits the dataset; the splits must hold a training batch and a validation entry.
RunData load_data(const FinetuneOptions& opts) {
  RunData d;
  d.tmpl = parse_template(opts.prompt_template);
  d.ds = load_dataset(opts.data_path());
  d.split = split_dataset(d.ds.size());
  if (d.split.train.size() < static_cast<size_t>(opts.batch_size)) {
    throw UsageError(fmt::format("{}: the train split has {} entries, fewer than --batch-size {}",
                                 opts.data_path().string(), d.split.train.size(), opts.batch_size),
                     "use a smaller --batch-size or a bigger dataset");
  }
  if (d.split.val.size() == 0) {
    throw UsageError(fmt::format("{}: {} entries leave an empty validation split",
                                 opts.data_path().string(), d.ds.size()),
                     "the 85/10/5 split needs at least 2 entries for validation; use more data");
  }
  return d;
}

}  // namespace llmft
