// `llmft dedup`: near-duplicate entries of a dataset (character n-gram TF-IDF cosine similarity,
// as the reference's find-near-duplicates.py), a JSON report and an optional cleaned copy.
// Work is in src/llmft/data/dedup.cpp.
#include <fmt/format.h>

#include <memory>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/dedup.h"

namespace llmft::app {
namespace {

struct Cli {
  std::string data;
  DedupOptions o;
  std::string output, clean;
  std::vector<std::string> clean_fields{"input", "output"};
  size_t show = 5;
};

int run(const Cli& c) {
  if (!c.output.empty()) check_output_path(c.output, {c.data});
  if (!c.clean.empty()) check_output_path(c.clean, {c.data});
  if (!c.output.empty() && c.output == c.clean) {
    throw UsageError("--output and --clean name the same file", "give the report and the cleaned "
                     "dataset different names");
  }
  const InstructionDataset ds = load_dataset(c.data);
  for (const std::string& f : c.clean_fields) {
    if (std::find(c.o.fields.begin(), c.o.fields.end(), f) == c.o.fields.end()) {
      throw UsageError(fmt::format("--clean-fields {}: not among --fields", f),
                       "pairs are only found in the fields --fields lists");
    }
  }
  const DedupResult r = find_near_duplicates(ds, c.o);
  fmt::print("{}", format_dedup_summary(ds, r, c.show));
  std::vector<size_t> removed;
  if (!c.clean.empty()) {
    removed = later_members(r, c.clean_fields);
    std::vector<InstructionEntry> kept;
    kept.reserve(ds.size() - removed.size());
    size_t k = 0;
    for (size_t i = 0; i < ds.size(); ++i) {
      if (k < removed.size() && removed[k] == i) {
        ++k;
      } else {
        kept.push_back(ds.entries[i]);
      }
    }
    save_dataset(c.clean, kept);
    std::string fields;
    for (const auto& f : c.clean_fields) fields += (fields.empty() ? "" : ", ") + f;
    fmt::print("\ncleaned: {} of {} entries written to {} ({} removed: the later entry of each "
               "pair in {})\n",
               kept.size(), ds.size(), c.clean, removed.size(), fields);
  }
  if (!c.output.empty()) {
    const auto report = dedup_report(ds, r, c.clean.empty() ? nullptr : &removed);
    write_file_atomic(c.output,
                      report.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
    fmt::print("report: {}\n", c.output);
  }
  return 0;
}

Runner setup(CLI::App& app) {
  auto c = std::make_shared<Cli>();
  app.add_option("--data,-d", c->data, "Alpaca-format dataset (.json array or .jsonl)")->required();
  app.add_option("--threshold,-t", c->o.threshold,
                 "Report pairs whose cosine similarity is at least this, in (0, 1]")
      ->capture_default_str();
  app.add_option("--fields", c->o.fields,
                 "Fields compared, each on its own (comma-separated; any string field)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--output,-o", c->output,
                 "Write the full report (every pair with both texts and splits) as JSON here");
  app.add_option("--clean", c->clean,
                 "Write the dataset without the later entry of each pair here (.json or .jsonl)");
  app.add_option("--clean-fields", c->clean_fields,
                 "Pairs in these fields remove their later entry with --clean; pairs in other "
                 "fields are only reported (the reference keeps same-instruction entries)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--show", c->show, "Pairs printed per field")->capture_default_str();
  app.add_option("--threads", c->o.threads, "Threads (0 = all cores)")
      ->check(CLI::Range(0, 4096))
      ->capture_default_str();
  return [c] { return run(*c); };
}

const Registration reg{"dedup",
                       "Find near-duplicate entries (character n-gram TF-IDF cosine similarity)",
                       setup};

}  // namespace
}  // namespace llmft::app
