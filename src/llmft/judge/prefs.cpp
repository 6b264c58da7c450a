// Preference data from a judge LLM's polite/impolite rewrites; see prefs.h.
#include "llmft/judge/prefs.h"

#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/data/dataset.h"
#include "llmft/data/template.h"
#include "llmft/judge/client.h"
#include "llmft/judge/pool.h"
#include "llmft/judge/prompt.h"

namespace llmft {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

struct Pair {
  enum class State { kPending, kDone, kFailed } state = State::kPending;
  std::string chosen, rejected, error;
};

// Entries of `out` (a previous run of the same input) that already have both answers.
void resume_from(const fs::path& out, const InstructionDataset& in, std::vector<Pair>& pairs) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  const std::string hint = fmt::format(
      "delete {} or choose another --output (or pass --no-resume to start again)", out.string());
  const std::string prev_text = read_file(out);
  const ojson prev = parse_json<ojson>(prev_text, out.string(), hint);
  if (!prev.is_array() || prev.size() != in.size()) {
    throw Error(fmt::format("{}: existing output does not hold the {} entries of {}", out.string(),
                            in.size(), in.path.string()),
                hint);
  }
  for (size_t i = 0; i < in.size(); ++i) {
    const ojson& p = prev[i];
    const InstructionEntry& e = in.entries[i];
    if (!p.is_object() || p.value("instruction", std::string()) != e.instruction ||
        p.value("input", std::string()) != e.input || p.value("output", std::string()) != e.output) {
      throw Error(fmt::format("{}: entry {} differs from {}: it was built from another input",
                              out.string(), i, in.path.string()),
                  hint);
    }
    if (p.contains("chosen") && p["chosen"].is_string() && p.contains("rejected") &&
        p["rejected"].is_string()) {
      pairs[i] = {Pair::State::kDone, p["chosen"].get<std::string>(),
                  p["rejected"].get<std::string>(), {}};
    }
  }
}

void save(const fs::path& out, const InstructionDataset& in, const std::vector<Pair>& pairs,
          uint64_t seed) {
  ojson arr = ojson::array();
  for (size_t i = 0; i < in.size(); ++i) {
    ojson e = in.entries[i].raw;
    e.erase("chosen");
    e.erase("rejected");
    e["politeness"] = prefs_polite(seed, i) ? "polite" : "impolite";
    const Pair& p = pairs[i];
    if (p.state == Pair::State::kDone) {
      e["chosen"] = p.chosen;
      e["rejected"] = p.rejected;
    } else if (p.state == Pair::State::kFailed) {
      e["prefs_error"] = p.error;
    }
    arr.push_back(std::move(e));
  }
  write_file_atomic(out, arr.dump(4, ' ', false, ojson::error_handler_t::replace) + "\n");
}

}  // namespace

bool prefs_polite(uint64_t seed, size_t i) {
  return (splitmix64(seed ^ splitmix64(static_cast<uint64_t>(i))) >> 63) != 0;
}

std::string prefs_prompt(std::string_view instruction, std::string_view input,
                         std::string_view output, bool polite) {
  return fmt::format(
      "Given the input `{}` and correct output `{}`, slightly rewrite the output to be more {}."
      "Keep the modification minimal.Only return return the generated response and nothing else.",
      format_prompt(PromptTemplate::kAlpaca, instruction, input), output,
      polite ? "polite" : "impolite");
}

PrefsSummary build_preferences(const PrefsOptions& opts) {
  const JudgeOptions& jo = opts.judge;
  if (jo.output.empty()) throw UsageError("llmft prefs needs --output FILE");
  if (jo.concurrency < 1) {
    throw UsageError(fmt::format("--concurrency {} is out of range: expected 1 or more",
                                 jo.concurrency));
  }
  const InstructionDataset in = load_dataset(jo.input);
  PrefsSummary sum;
  sum.input = jo.input;
  sum.output = jo.output;
  sum.total = static_cast<int64_t>(in.size());
  std::vector<Pair> pairs(in.size());
  if (jo.resume) resume_from(jo.output, in, pairs);
  std::vector<size_t> todo;
  for (size_t i = 0; i < in.size(); ++i) {
    if (pairs[i].state == Pair::State::kDone) {
      ++sum.resumed;
    } else {
      todo.push_back(i);
    }
  }
  std::optional<std::string> lost;
  if (!todo.empty()) {
    const judge::JudgeClient client(jo);
    client.check(jo.connect_timeout_s, jo.read_timeout_s);
    save(jo.output, in, pairs, opts.seed);  // the file exists from here on: a kill resumes
    judge::RequestPool pool(jo, client);
    judge::RequestPool::Task task;
    task.prompt = [&](size_t i) {
      const InstructionEntry& e = in.entries[i];
      return prefs_prompt(e.instruction, e.input, e.output, prefs_polite(opts.seed, i));
    };
    task.reply = [&](size_t i, const std::string& reply) {
      if (judge::trim(reply).empty()) {
        pool.report(fmt::format("entry {}: empty rewrite, left out", i));
        pairs[i] = {Pair::State::kFailed, {}, {}, "empty rewrite"};
        return;
      }
      // A polite rewrite is preferred to the original; the original to an impolite rewrite.
      const std::string& original = in.entries[i].output;
      pairs[i] = prefs_polite(opts.seed, i) ? Pair{Pair::State::kDone, reply, original, {}}
                                            : Pair{Pair::State::kDone, original, reply, {}};
    };
    task.failed = [&](size_t i, const std::string& error) {
      pool.report(fmt::format("entry {}: failed, left out: {}", i, error));
      pairs[i] = {Pair::State::kFailed, {}, {}, error};
    };
    task.save = [&] { save(jo.output, in, pairs, opts.seed); };
    pool.run(todo, "prefs", task);
    sum.requests = pool.requests();
    lost = pool.lost();
  } else {
    save(jo.output, in, pairs, opts.seed);
  }
  int64_t done = 0;
  for (size_t i = 0; i < in.size(); ++i) {
    if (pairs[i].state == Pair::State::kDone) {
      ++done;
      ++(prefs_polite(opts.seed, i) ? sum.polite : sum.impolite);
    } else if (pairs[i].state == Pair::State::kFailed) {
      ++sum.failed;
    }
  }
  if (lost) {
    throw Error(fmt::format("lost the judge server: {}; {} of {} entries are done in {}", *lost,
                            done, in.size(), jo.output.string()),
                "start the server again (e.g. `ollama serve`) and rerun the same command: it "
                "resumes where it stopped");
  }
  return sum;
}

std::string format_prefs_summary(const PrefsSummary& s) {
  std::string out = fmt::format(
      "Preference pairs: {} of {} ({} polite rewrites as chosen, {} impolite rewrites as "
      "rejected){}\n",
      s.polite + s.impolite, s.total, s.polite, s.impolite,
      s.resumed ? fmt::format("; {} done by an earlier run", s.resumed) : std::string());
  if (s.failed) out += fmt::format("Left out: {} entries without a usable rewrite\n", s.failed);
  out += fmt::format("Written to {}\n", s.output.string());
  return out;
}

}  // namespace llmft
