// Dataset answering; see answer.h.
#include "llmft/generate/answer.h"

#include <fmt/format.h>

#include <memory>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/core/progress.h"
#include "llmft/generate/stream.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

namespace {

// Thrown from on_token to leave generate() when opts.stop_requested is set.
struct Stopped {};

// The object an answered entry is written as, before its answer is added.
nlohmann::ordered_json entry_object(const InstructionEntry& e) {
  if (e.raw.is_object()) return e.raw;
  nlohmann::ordered_json obj = nlohmann::ordered_json::object();
  obj["instruction"] = e.instruction;
  obj["input"] = e.input;
  obj["output"] = e.output;
  return obj;
}

}  // namespace

std::string_view response_marker(PromptTemplate t) {
  return t == PromptTemplate::kPhi3 ? kPhi3ResponseMarker : kAlpacaResponseMarker;
}

nlohmann::ordered_json answer_entries(Gpt2& model, const BpeTokenizer& tok,
                                      std::span<const InstructionEntry> entries,
                                      const AnswerOptions& opts, GenerateStats* stats) {
  opts.gen.validate();
  std::vector<std::string> prompts;
  prompts.reserve(entries.size());
  for (const auto& e : entries) prompts.push_back(format_prompt(opts.prompt_template, e));
  const auto ids = tok.encode_batch(prompts, SpecialTokens::kAllow, opts.gen.threads);

  GenerateOptions gen = opts.gen;
  const auto marker = response_marker(opts.prompt_template);
  // With stop strings, each answer is streamed through its own AnswerStream (which ends it early).
  std::vector<AnswerStream> streams;
  if (!opts.stop.empty()) {
    streams.reserve(entries.size());
    for (size_t i = 0; i < entries.size(); ++i)
      streams.emplace_back(tok, ids[i], prompts[i], marker, opts.stop);
  }
  std::unique_ptr<ProgressBar> bar;
  int64_t done = 0, tokens = 0;
  if (opts.progress) bar = std::make_unique<ProgressBar>(opts.label, entries.size(), "entry");
  auto rate = [&] {
    const double s = bar ? bar->elapsed_s() : 0.0;
    return fmt::format("{:.1f} tok/s", s > 0 ? static_cast<double>(tokens) / s : 0.0);
  };
  const auto user_token = opts.gen.on_token;
  const auto user_finish = opts.gen.on_finish;
  // Each prompt's tokens as they come, and which prompts finished (all unless stopped).
  std::vector<std::vector<int32_t>> outs(entries.size());
  std::vector<char> finished(entries.size(), 0);
  gen.on_token = [&](size_t p, int32_t t) {
    if (opts.stop_requested && opts.stop_requested->load()) throw Stopped{};
    ++tokens;
    outs[p].push_back(t);
    if (!streams.empty()) streams[p].push(t);
    if (user_token) user_token(p, t);
  };
  if (!streams.empty()) gen.stop_now = [&](size_t p) { return streams[p].stopped(); };
  gen.on_finish = [&](size_t p) {
    ++done;
    finished[p] = 1;
    if (bar) bar->update(done, rate());
    if (user_finish) user_finish(p);
  };
  try {
    generate(model, ids, gen, stats);
  } catch (const Stopped&) {
    if (stats) *stats = GenerateStats{};
  }
  if (bar) bar->finish(rate());

  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (size_t i = 0; i < entries.size(); ++i) {
    nlohmann::ordered_json obj = entry_object(entries[i]);
    if (!finished[i]) {
      // cut short by opts.stop_requested: no answer
    } else if (streams.empty()) {
      obj[opts.field] = extract_response(tok, ids[i], outs[i], prompts[i], marker);
    } else {
      streams[i].finish();
      obj[opts.field] = streams[i].text();
    }
    arr.push_back(std::move(obj));
  }
  return arr;
}

std::string dump_answers(const nlohmann::ordered_json& answered) {
  return answered.dump(4, ' ', /*ensure_ascii=*/true);
}

nlohmann::ordered_json answer_dataset(Gpt2& model, const BpeTokenizer& tok,
                                      std::span<const InstructionEntry> entries,
                                      const std::filesystem::path& out, const AnswerOptions& opts,
                                      GenerateStats* stats, AnswerProgress* progress) {
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (const auto& e : entries) arr.push_back(entry_object(e));
  std::vector<size_t> todo;  // entries still to answer
  std::error_code ec;
  if (opts.resume && std::filesystem::exists(out, ec)) {
    const std::string hint = fmt::format(
        "delete {} or choose another --output (or pass --no-resume to answer everything again)",
        out.string());
    const auto prev =
        parse_json<nlohmann::ordered_json>(read_file(out), out.string() + " (existing output)", hint);
    if (!prev.is_array() || prev.size() != entries.size()) {
      throw Error(fmt::format("{}: existing output does not hold the {} entries being answered",
                              out.string(), entries.size()),
                  hint);
    }
    for (size_t i = 0; i < entries.size(); ++i) {
      nlohmann::ordered_json p = prev[i];
      const bool answered = p.is_object() && p.contains(opts.field) && p[opts.field].is_string();
      if (p.is_object()) p.erase(opts.field);
      if (p != arr[i]) {
        throw Error(fmt::format("{}: entry {} differs from the entry being answered: the file "
                                "holds answers to other entries",
                                out.string(), i),
                    hint);
      }
      if (answered) {
        arr[i] = prev[i];
      } else {
        todo.push_back(i);
      }
    }
  } else {
    for (size_t i = 0; i < entries.size(); ++i) todo.push_back(i);
  }
  AnswerProgress pr;
  pr.kept = entries.size() - todo.size();
  if (pr.kept > 0 && opts.on_resume) opts.on_resume(pr);
  if (stats) *stats = GenerateStats{};
  if (!todo.empty()) {
    std::vector<InstructionEntry> ask;
    ask.reserve(todo.size());
    for (size_t i : todo) ask.push_back(entries[i]);
    const auto got = answer_entries(model, tok, ask, opts, stats);
    for (size_t j = 0; j < todo.size(); ++j) {
      const bool answered = got[j].contains(opts.field);
      (answered ? pr.answered : pr.left) += 1;
      arr[todo[j]] = got[j];
    }
    write_file_atomic(out, dump_answers(arr));
  } else if (!opts.resume || !std::filesystem::exists(out, ec)) {
    write_file_atomic(out, dump_answers(arr));  // no entries at all
  }
  if (progress) *progress = pr;
  return arr;
}

}  // namespace llmft
