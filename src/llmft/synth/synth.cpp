// Magpie-style generation: a raw completion of the user header gives the instruction, a chat
// turn gives the answer. Requests, retries, worker threads and saving are judge's (client.h,
// pool.h: RequestPool with Task::request); near-duplicates are found with data/dedup.h.
#include "llmft/synth/synth.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <nlohmann/json.hpp>
#include <optional>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/data/dedup.h"
#include "llmft/judge/client.h"
#include "llmft/judge/pool.h"
#include "llmft/judge/prompt.h"

namespace llmft {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;
using judge::quote_truncated;
using judge::trim;

namespace {

constexpr const char* kSeedField = "synth_seed";

struct Generated {
  uint64_t seed = 0;
  std::string instruction, output;
};

std::string dump(const ojson& j) { return j.dump(-1, ' ', false, ojson::error_handler_t::replace); }

void check_options(const SynthOptions& o) {
  if (o.count < 1) throw UsageError(fmt::format("--count {}: expected 1 or more", o.count));
  if (o.output.empty()) throw UsageError("llmft synth needs --output FILE", "e.g. --output synth.json");
  if (o.header.empty()) throw UsageError("--header is empty", "the default is Llama 3's user header");
  if (!(o.temperature >= 0)) throw UsageError(fmt::format("--temperature {}: expected 0 or more", o.temperature));
  if (!(o.top_p > 0 && o.top_p <= 1)) throw UsageError(fmt::format("--top-p {}: expected a value in (0, 1]", o.top_p));
  if (o.max_instruction_tokens < 1) {
    throw UsageError(fmt::format("--max-instruction-tokens {}: expected 1 or more", o.max_instruction_tokens));
  }
  if (o.max_attempts < 0) throw UsageError(fmt::format("--max-attempts {}: expected 0 or more", o.max_attempts));
  if (!(o.dedup_threshold > 0 && o.dedup_threshold <= 1)) {
    throw UsageError(fmt::format("--dedup-threshold {}: expected a value in (0, 1]", o.dedup_threshold));
  }
  if (o.server.concurrency < 1) {
    throw UsageError(fmt::format("--concurrency {}: expected 1 or more", o.server.concurrency));
  }
  if (o.server.max_retries < 0) throw UsageError(fmt::format("--max-retries {}: expected 0 or more", o.server.max_retries));
  if (o.server.model.empty()) throw UsageError("--model is empty", "e.g. --model llama3");
}

// The entries an earlier run wrote to `out` (each carries the seed that made it).
std::vector<Generated> resume_from(const fs::path& out) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return {};
  const std::string hint = fmt::format(
      "delete {} or choose another --output (or pass --no-resume to start again)", out.string());
  const InstructionDataset ds = [&] {
    try {
      return load_dataset(out);
    } catch (const Error& e) {
      throw Error(fmt::format("existing output: {}", e.what()), hint);
    }
  }();
  std::vector<Generated> v;
  for (size_t i = 0; i < ds.size(); ++i) {
    const auto it = ds.entries[i].raw.find(kSeedField);
    if (it == ds.entries[i].raw.end() || !it->is_number_unsigned()) {
      throw Error(fmt::format("{}: entry {} has no \"{}\": the file was not written by llmft synth",
                              out.string(), i, kSeedField),
                  hint);
    }
    v.push_back({it->get<uint64_t>(), ds.entries[i].instruction, ds.entries[i].output});
  }
  return v;
}

void save(const fs::path& out, std::vector<Generated> v) {
  std::sort(v.begin(), v.end(), [](const Generated& a, const Generated& b) { return a.seed < b.seed; });
  std::vector<InstructionEntry> entries;
  for (const Generated& g : v) {
    InstructionEntry e;
    e.raw = ojson{{"instruction", g.instruction}, {"input", ""}, {"output", g.output}, {kSeedField, g.seed}};
    entries.push_back(std::move(e));
  }
  save_dataset(out, entries);
}

// Drops generated entries whose instruction is a near-duplicate of an earlier one: of `against`
// (existing data) or of a generated entry with a smaller seed. Returns how many were dropped.
int64_t drop_near_duplicates(std::vector<Generated>& gen, const std::vector<std::string>& against,
                             double threshold) {
  std::sort(gen.begin(), gen.end(), [](const Generated& a, const Generated& b) { return a.seed < b.seed; });
  InstructionDataset ds;
  ds.path = "(existing and generated instructions)";
  auto entry = [](const std::string& instruction) {
    InstructionEntry e;
    e.instruction = instruction;
    return e;
  };
  for (const std::string& s : against) ds.entries.push_back(entry(s));
  for (const Generated& g : gen) ds.entries.push_back(entry(g.instruction));
  DedupOptions o;
  o.threshold = threshold;
  o.fields = {"instruction"};
  o.progress = false;
  const std::vector<size_t> later = later_members(find_near_duplicates(ds, o), {"instruction"});
  std::vector<bool> drop(gen.size(), false);
  int64_t n = 0;
  for (size_t i : later) {
    if (i >= against.size()) {
      drop[i - against.size()] = true;
      ++n;
    }
  }
  std::vector<Generated> kept;
  for (size_t k = 0; k < gen.size(); ++k) {
    if (!drop[k]) kept.push_back(std::move(gen[k]));
  }
  gen = std::move(kept);
  return n;
}

}  // namespace

std::string extract_instruction(std::string_view completion) {
  size_t pos = 0;
  while (pos <= completion.size()) {
    size_t nl = completion.find('\n', pos);
    if (nl == std::string_view::npos) nl = completion.size();
    const std::string_view line = trim(completion.substr(pos, nl - pos));
    if (!line.empty()) return std::string(line);
    pos = nl + 1;
  }
  return {};
}

std::string synth_instruction_body(const SynthOptions& o, uint64_t seed) {
  ojson b;
  b["model"] = o.server.model;
  b["prompt"] = o.header;
  if (o.server.api == JudgeApi::kOllama) {
    b["raw"] = true;  // no chat template: the header is the whole prompt
    b["options"] = ojson{{"seed", seed},
                         {"temperature", o.temperature},
                         {"top_p", o.top_p},
                         {"num_predict", o.max_instruction_tokens}};
  } else {
    b["max_tokens"] = o.max_instruction_tokens;
    b["temperature"] = o.temperature;
    b["top_p"] = o.top_p;
    b["seed"] = seed;
  }
  b["stream"] = o.server.stream;
  return dump(b);
}

std::string synth_answer_body(const SynthOptions& o, const std::string& instruction, uint64_t seed) {
  ojson b;
  b["model"] = o.server.model;
  b["messages"] = ojson::array({ojson{{"role", "user"}, {"content", instruction}}});
  if (o.server.api == JudgeApi::kOllama) {
    b["options"] = ojson{{"seed", seed}, {"temperature", o.temperature}, {"top_p", o.top_p}};
  } else {
    b["temperature"] = o.temperature;
    b["top_p"] = o.top_p;
    b["seed"] = seed;
  }
  b["stream"] = o.server.stream;
  return dump(b);
}

SynthSummary synth_dataset(const SynthOptions& opts) {
  check_options(opts);
  const auto t0 = std::chrono::steady_clock::now();
  SynthSummary sum;
  sum.output = opts.output;
  sum.wanted = opts.count;
  {
    std::vector<fs::path> inputs(opts.dedup_against.begin(), opts.dedup_against.end());
    for (const fs::path& p : inputs) {
      if (fs::exists(p) && fs::exists(opts.output) && fs::equivalent(p, opts.output)) {
        throw UsageError(fmt::format("--output {} is also a --dedup-against file", opts.output.string()));
      }
    }
    check_output_path(opts.output);
  }
  std::vector<Generated> gen = opts.resume ? resume_from(opts.output) : std::vector<Generated>{};
  sum.resumed = static_cast<int64_t>(gen.size());
  std::vector<std::string> against;
  for (const fs::path& p : opts.dedup_against) {
    for (InstructionEntry& e : load_dataset(p).entries) against.push_back(std::move(e.instruction));
  }
  const bool dedup = opts.dedup || !opts.dedup_against.empty();
  uint64_t next_seed = opts.seed;
  for (const Generated& g : gen) next_seed = std::max(next_seed, g.seed + 1);
  const int64_t max_attempts = opts.max_attempts > 0 ? opts.max_attempts : 2 * opts.count + 10;

  if (dedup && !gen.empty()) sum.duplicates += drop_near_duplicates(gen, against, opts.dedup_threshold);
  if (static_cast<int64_t>(gen.size()) > opts.count) {
    throw Error(fmt::format("{} already holds {} entries, more than --count {}", opts.output.string(),
                            gen.size(), opts.count),
                "raise --count, or choose another --output");
  }
  std::optional<judge::JudgeClient> client;
  if (static_cast<int64_t>(gen.size()) < opts.count) {
    client.emplace(opts.server, "server");
    client->check(opts.server.connect_timeout_s, opts.server.read_timeout_s);
  }
  const bool ollama = opts.server.api == JudgeApi::kOllama;
  for (int round = 1; static_cast<int64_t>(gen.size()) < opts.count && sum.attempts < max_attempts; ++round) {
    const int64_t n = std::min(opts.count - static_cast<int64_t>(gen.size()), max_attempts - sum.attempts);
    const uint64_t first_seed = next_seed;
    next_seed += static_cast<uint64_t>(n);
    sum.attempts += n;
    // The pool's entries are this round's seeds; an attempt's instruction waits in its slot for
    // reply(), which runs on the thread that made the requests.
    std::vector<size_t> seeds(static_cast<size_t>(n));
    for (size_t k = 0; k < seeds.size(); ++k) seeds[k] = static_cast<size_t>(first_seed + k);
    std::vector<std::string> instructions(seeds.size());
    judge::RequestPool pool(opts.server, *client);
    judge::RequestPool::Task task;
    task.item = "seed";
    task.request = [&](size_t seed, const judge::RequestPool::Post& post) {
      std::string& instruction = instructions[seed - first_seed];
      const std::string completion =
          post(ollama ? "/api/generate" : "/v1/completions", synth_instruction_body(opts, seed));
      instruction = extract_instruction(
          ollama ? judge::parse_ollama_generate_reply(completion, opts.server.stream)
                 : judge::parse_openai_completion_reply(completion, opts.server.stream));
      if (instruction.empty()) return std::string();
      const std::string reply =
          post(ollama ? "/api/chat" : "/v1/chat/completions", synth_answer_body(opts, instruction, seed));
      return std::string(trim(ollama ? judge::parse_ollama_reply(reply, opts.server.stream)
                                     : judge::parse_openai_reply(reply, opts.server.stream)));
    };
    task.reply = [&](size_t seed, const std::string& answer) {
      std::string& instruction = instructions[seed - first_seed];
      if (instruction.empty() || answer.empty()) {
        ++sum.empty;
        pool.report(fmt::format("seed {}: empty {}, left out", seed, instruction.empty() ? "instruction" : "answer"));
        return;
      }
      gen.push_back(Generated{seed, std::move(instruction), answer});
    };
    task.failed = [&](size_t seed, const std::string& error) {
      ++sum.failed;
      pool.report(fmt::format("seed {}: failed, left out: {}", seed, error));
    };
    task.save = [&] { save(opts.output, gen); };
    pool.run(seeds, round == 1 ? std::string("generating") : fmt::format("generating (round {})", round), task);
    sum.requests += pool.requests();
    if (dedup) {  // run() saved before this
      sum.duplicates += drop_near_duplicates(gen, against, opts.dedup_threshold);
      save(opts.output, gen);
    }
    if (pool.lost()) {
      throw Error(fmt::format("lost the server at {}: {}; {} of {} entries are in {}", client->base_url(),
                              *pool.lost(), gen.size(), opts.count, opts.output.string()),
                  "start the server again (e.g. `ollama serve`) and rerun the same command: it "
                  "continues where it stopped");
    }
  }
  sum.written = static_cast<int64_t>(gen.size());
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return sum;
}

std::string format_synth_summary(const SynthSummary& s) {
  std::string out = fmt::format("Entries: {} of {} in {}\n", s.written, s.wanted, s.output.string());
  if (s.resumed) out += fmt::format("Kept from an earlier run: {}\n", s.resumed);
  out += fmt::format("Attempts this run: {} ({} HTTP requests, {:.1f} s)\n", s.attempts, s.requests, s.seconds);
  if (s.empty || s.failed) out += fmt::format("Left out: {} empty, {} failed\n", s.empty, s.failed);
  if (s.duplicates) out += fmt::format("Dropped as near-duplicates: {}\n", s.duplicates);
  return out;
}

}  // namespace llmft
