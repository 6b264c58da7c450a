// Dataset answering; see answer.h.
#include "llmft/generate/answer.h"

#include <fmt/format.h>

#include <memory>

#include "llmft/core/io.h"
#include "llmft/core/progress.h"
#include "llmft/generate/stream.h"
#include "llmft/tokenizer/bpe.h"

namespace llmft {

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
  gen.on_token = [&](size_t p, int32_t t) {
    ++tokens;
    if (!streams.empty()) streams[p].push(t);
    if (user_token) user_token(p, t);
  };
  if (!streams.empty()) gen.stop_now = [&](size_t p) { return streams[p].stopped(); };
  gen.on_finish = [&](size_t p) {
    ++done;
    if (bar) bar->update(done, rate());
    if (user_finish) user_finish(p);
  };
  const auto outs = generate(model, ids, gen, stats);
  if (bar) bar->finish(rate());

  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (size_t i = 0; i < entries.size(); ++i) {
    nlohmann::ordered_json obj = entries[i].raw.is_object() ? entries[i].raw
                                                            : nlohmann::ordered_json::object();
    if (!entries[i].raw.is_object()) {
      obj["instruction"] = entries[i].instruction;
      obj["input"] = entries[i].input;
      obj["output"] = entries[i].output;
    }
    if (streams.empty()) {
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
                                      GenerateStats* stats) {
  auto arr = answer_entries(model, tok, entries, opts, stats);
  write_file_atomic(out, dump_answers(arr));
  return arr;
}

}  // namespace llmft
