// `llmft generate`: answer one instruction (the argument, stdin or --file; streams only the
// response), or a whole dataset file (--data/--output: entries + "model_response", batched, with
// progress). Also holds the generation options shared with `llmft chat`. Library: generate/.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <iterator>
#include <memory>
#include <random>
#include <string>

#include "command.h"
#include "gen_common.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/generate/answer.h"
#include "llmft/generate/stream.h"
#include "llmft/io/model_loader.h"
#include "llmft/tokenizer/bpe.h"
#include "stop_signal.h"

namespace llmft::app {

ModelLoadOptions model_load_options(const GenerationCliOptions& o) {
  ModelLoadOptions m;
  m.adapter = o.adapter;
  return m;
}

void add_generation_options(CLI::App& app, GenerationCliOptions& o) {
  app.add_option("--model", o.model,
                 "Model folder (Hugging Face layout), name (gpt2-medium) or a .gguf file "
                 "(llmft export: f32, f16 or q8_0, dequantized to fp32)")
      ->required();
  app.add_option("--adapter", o.adapter,
                 "LoRA adapter folder (PEFT layout, e.g. a finetune --lora run's adapter/) run "
                 "beside the model without merging");
  app.add_option("--template", o.prompt_template, "Prompt template: alpaca or phi3")
      ->capture_default_str();
  app.add_option("--max-new-tokens", o.max_new_tokens, "Tokens to generate at most per answer")
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "0 = greedy (argmax); > 0 samples")
      ->capture_default_str();
  app.add_option("--top-k", o.top_k, "Sample only from the k most likely tokens (0 = off)")
      ->capture_default_str();
  app.add_option("--top-p", o.top_p, "Nucleus sampling mass in (0, 1] (1 = off)")
      ->capture_default_str();
  app.add_option("--min-p", o.min_p,
                 "Sample only tokens at least this fraction as likely as the most likely one "
                 "(llama.cpp's min-p, before temperature; 0 = off)")
      ->capture_default_str();
  app.add_option("--repeat-penalty", o.repeat_penalty,
                 "Divide the positive logits (multiply the negative ones) of tokens seen in the "
                 "last --repeat-last-n tokens by this, as llama.cpp (1 = off; applies to greedy "
                 "too)")
      ->capture_default_str();
  app.add_option("--repeat-last-n", o.repeat_last_n,
                 "Tokens (prompt included) the repeat penalty looks back over (-1 = all)")
      ->capture_default_str();
  app.add_option("--stop", o.stop,
                 "End the answer before this text (repeatable; the first one found wins)")
      ->expected(1)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  o.seed_option = app.add_option("--seed", o.seed,
                                 "Sampling seed (same seed, same output); default: a fresh one, "
                                 "printed on stderr");
  app.add_flag("--verbose", o.verbose,
               "Print the prompt's tokens and the prompt and decode speed (tokens/s) on stderr");
  app.add_option("--threads", o.threads, "Threads (0 = all cores)")->capture_default_str();
  app.add_option("--precision", o.precision,
                 "Matrix products: fp32, or bf16 (bf16 products with fp32 accumulation and a bf16 "
                 "KV cache: faster, answers may differ slightly)")
      ->capture_default_str();
}

GenerateOptions to_generate_options(GenerationCliOptions& o) {
  GenerateOptions g;
  g.max_new_tokens = o.max_new_tokens;
  g.sampler.temperature = o.temperature;
  g.sampler.top_k = o.top_k;
  g.sampler.top_p = o.top_p;
  g.sampler.min_p = o.min_p;
  g.sampler.repeat_penalty = o.repeat_penalty;
  g.sampler.repeat_last_n = o.repeat_last_n;
  g.threads = o.threads;
  g.precision = parse_precision(o.precision);
  g.validate();
  for (size_t i = 0; i < o.stop.size(); ++i)
    if (o.stop[i].empty()) throw UsageError("--stop: the stop text is empty", "e.g. --stop '###'");
  if (o.seed_option == nullptr || o.seed_option->count() == 0) {
    o.seed = std::random_device{}();
    o.seed = (o.seed << 32) ^ std::random_device{}();
    if (!g.sampler.greedy())
      std::fprintf(stderr, "sampling with seed %llu (--seed %llu repeats it)\n",
                   static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(o.seed));
  }
  g.sampler.seed = o.seed;
  return g;
}

void warn_if_over_context(int64_t maxT, int64_t prompt_tokens, int64_t max_new_tokens) {
  const int64_t left = std::max<int64_t>(0, maxT - prompt_tokens);
  if (max_new_tokens <= left) return;
  std::fprintf(stderr,
               "warning: --max-new-tokens %lld is more than the %lld tokens left in the model's "
               "%lld-token context after the %lld-token prompt; past that, generation keeps only "
               "the last %lld tokens (the start of the prompt is lost, and each token is slower)\n",
               static_cast<long long>(max_new_tokens), static_cast<long long>(left),
               static_cast<long long>(maxT), static_cast<long long>(prompt_tokens),
               static_cast<long long>(maxT));
}

void print_timings(const GenerateStats& st) {
  std::fprintf(stderr,
               "prompt: %lld tokens in %.3f s (%.1f tokens/s); decode: %lld tokens in %.3f s "
               "(%.1f tokens/s); %lld new tokens in all\n",
               static_cast<long long>(st.prompt_tokens), st.prefill_seconds,
               st.prompt_tokens_per_s(), static_cast<long long>(st.decode_tokens),
               st.decode_seconds, st.decode_tokens_per_s(), static_cast<long long>(st.new_tokens));
}

namespace {

struct Options {
  GenerationCliOptions gen;
  std::string instruction, file, input, data, output;
  int64_t batch_size = GenerateOptions{}.batch_size;
  bool no_resume = false;
  int64_t interrupt_after_answers = -1;  // test hook: as if Ctrl-C came after N answers
};

// The instruction from the argument, stdin ("-") or --file, without trailing line breaks.
std::string read_instruction(const Options& o) {
  if (!o.file.empty() && !o.instruction.empty())
    throw UsageError("give the instruction as an argument or with --file, not both");
  std::string text = o.instruction;
  if (!o.file.empty()) {
    text = read_file(o.file);
  } else if (o.instruction == "-") {
    text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if ((o.instruction == "-" || !o.file.empty()) && text.empty())
    throw UsageError(fmt::format("the instruction read from {} is empty",
                                 o.file.empty() ? "stdin" : o.file));
  return text;
}

void print(std::string_view s) {
  std::fwrite(s.data(), 1, s.size(), stdout);
  std::fflush(stdout);
}

int run(Options& o) {
  const PromptTemplate tmpl = parse_template(o.gen.prompt_template);
  GenerateOptions g = to_generate_options(o.gen);
  g.batch_size = o.batch_size;
  g.validate();
  const bool dataset_mode = !o.data.empty();
  if (dataset_mode && (!o.instruction.empty() || !o.file.empty()))
    throw UsageError("give either an instruction or --data, not both");
  if (!dataset_mode && o.instruction.empty() && o.file.empty())
    throw UsageError("nothing to answer",
                     "give an instruction text ('-' reads stdin), --file FILE, or --data FILE "
                     "--output OUT");
  if (dataset_mode && o.output.empty())
    throw UsageError("--data needs --output", "e.g. --output answers.json");
  if (!dataset_mode && !o.output.empty())
    throw UsageError("--output is only for --data");
  if (dataset_mode) check_output_path(o.output, {o.data});
  // Check the inputs before the (slow) model load.
  InstructionDataset ds;
  std::string instruction;
  if (dataset_mode) {
    ds = load_dataset(o.data);
  } else {
    instruction = read_instruction(o);
  }
  LoadedModel m = load_model(o.gen.model, model_load_options(o.gen));
  Gpt2& model = *m.model;
  const int64_t maxT = model.config().maxT;
  GenerateStats st;
  if (!dataset_mode) {
    // One answer, streamed as it is generated; the printed text is extract_response()'s.
    const std::string prompt = format_prompt(tmpl, instruction, o.input);
    auto ids = m.tokenizer->encode(prompt, SpecialTokens::kAllow);
    warn_if_over_context(maxT, static_cast<int64_t>(ids.size()), g.max_new_tokens);
    AnswerStream stream(*m.tokenizer, ids, prompt, response_marker(tmpl), o.gen.stop);
    g.on_token = [&](size_t, int32_t t) { print(stream.push(t)); };
    g.stop_now = [&](size_t) { return stream.stopped(); };
    generate(model, {ids}, g, &st);
    print(stream.finish() + "\n");
    if (o.gen.verbose) print_timings(st);
    return 0;
  }
  AnswerOptions a;
  a.prompt_template = tmpl;
  a.gen = g;
  a.stop = o.gen.stop;
  int64_t longest = 0;
  for (const auto& e : ds.entries)
    longest = std::max<int64_t>(
        longest, static_cast<int64_t>(
                     m.tokenizer->encode(format_prompt(tmpl, e), SpecialTokens::kAllow).size()));
  warn_if_over_context(maxT, longest, g.max_new_tokens);
  // Ctrl-C or SIGTERM: the answers finished so far are written; a rerun answers the rest.
  a.resume = !o.no_resume;
  StopControl* stop = install_stop_handler(
      ": writing the answers finished so far; run the same command again to answer the rest; "
      "a second signal (Ctrl-C) stops at once\n");
  a.stop_requested = &stop->requested;
  int64_t finished = 0;
  if (o.interrupt_after_answers >= 0) {
    if (o.interrupt_after_answers == 0) stop->requested.store(true);
    a.gen.on_finish = [&](size_t) {
      if (++finished == o.interrupt_after_answers) stop->requested.store(true);
    };
  }
  a.on_resume = [&](const AnswerProgress& kept) {
    std::printf("%s: keeping %zu answers of an earlier run (--no-resume answers them again); "
                "answering the other %zu\n",
                o.output.c_str(), kept.kept, ds.entries.size() - kept.kept);
    std::fflush(stdout);
  };
  AnswerProgress pr;
  const auto arr = answer_dataset(model, *m.tokenizer, ds.entries, o.output, a, &st, &pr);
  remove_stop_handler();
  if (pr.left > 0) {
    std::printf("stopped: %zu of %zu entries answered in %s; run the same command again to "
                "answer the other %zu\n",
                pr.kept + pr.answered, arr.size(), o.output.c_str(), pr.left);
    std::fflush(stdout);
    return stop_exit_code();
  }
  if (pr.answered == 0 && pr.kept > 0) {
    std::printf("%s already holds all %zu answers; nothing to do\n", o.output.c_str(),
                arr.size());
    return 0;
  }
  std::printf("wrote %zu answers to %s (%zu new: %lld new tokens in %.1f s, %.1f tok/s)\n",
              arr.size(), o.output.c_str(), pr.answered, static_cast<long long>(st.new_tokens),
              st.seconds, st.seconds > 0 ? static_cast<double>(st.new_tokens) / st.seconds : 0.0);
  if (o.gen.verbose) print_timings(st);
  return 0;
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  add_generation_options(app, o->gen);
  app.add_option("instruction", o->instruction,
                 "Instruction to answer ('-' reads it from stdin; or use --file or --data)");
  app.add_option("-f,--file", o->file, "Read the instruction from this file");
  app.add_option("--input", o->input, "Optional input for the instruction")->capture_default_str();
  app.add_option("--data", o->data, "Dataset file (JSON array / JSONL of instruction, input, output)");
  app.add_option("--output", o->output,
                 "With --data: where to write entries + model_response (written atomically; on "
                 "Ctrl-C or SIGTERM with the answers finished so far, and a rerun with the same "
                 "--output answers only the others)");
  app.add_flag("--no-resume", o->no_resume,
               "With --data: answer every entry again instead of keeping the answers an existing "
               "--output holds");
  app.add_option("--interrupt-after-answers", o->interrupt_after_answers)->group("");
  app.add_option("--batch-size", o->batch_size,
                 "Prompts decoded together (more is faster up to ~all of them; each holds a KV "
                 "cache: gpt2-medium, 256 new tokens: ~61 MB fp32, ~31 MB bf16)")
      ->capture_default_str();
  return [o] { return run(*o); };
}

const Registration reg{"generate", "Answer an instruction, or a whole dataset, with a model",
                       setup};

}  // namespace
}  // namespace llmft::app
