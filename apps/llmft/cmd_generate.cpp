// `llmft generate`: answer one instruction (prints only the response), or a whole dataset file
// (--data/--output: entries + "model_response", batched, with progress). Library: generate/.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "command.h"
#include "gen_common.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/data/dataset.h"
#include "llmft/generate/answer.h"
#include "llmft/io/model_loader.h"

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
  app.add_option("--seed", o.seed, "Sampling seed (same seed, same output)")->capture_default_str();
  app.add_option("--threads", o.threads, "Threads (0 = all cores)")->capture_default_str();
  app.add_option("--precision", o.precision,
                 "Matrix products: fp32, or bf16 (bf16 products with fp32 accumulation and a bf16 "
                 "KV cache: faster, answers may differ slightly)")
      ->capture_default_str();
}

GenerateOptions to_generate_options(const GenerationCliOptions& o) {
  GenerateOptions g;
  g.max_new_tokens = o.max_new_tokens;
  g.sampler.temperature = o.temperature;
  g.sampler.top_k = o.top_k;
  g.sampler.top_p = o.top_p;
  g.sampler.seed = o.seed;
  g.threads = o.threads;
  g.precision = parse_precision(o.precision);
  g.validate();
  return g;
}

namespace {

struct Options {
  GenerationCliOptions gen;
  std::string instruction, input, data, output;
  int64_t batch_size = GenerateOptions{}.batch_size;
};

int run(const Options& o) {
  const PromptTemplate tmpl = parse_template(o.gen.prompt_template);
  GenerateOptions g = to_generate_options(o.gen);
  g.batch_size = o.batch_size;
  g.validate();
  const bool dataset_mode = !o.data.empty();
  if (dataset_mode && !o.instruction.empty())
    throw UsageError("give either an instruction or --data, not both");
  if (!dataset_mode && o.instruction.empty())
    throw UsageError("nothing to answer", "give an instruction text or --data FILE --output OUT");
  if (dataset_mode && o.output.empty())
    throw UsageError("--data needs --output", "e.g. --output answers.json");
  if (!dataset_mode && !o.output.empty())
    throw UsageError("--output is only for --data");
  if (dataset_mode) check_output_path(o.output, {o.data});
  if (!dataset_mode && !o.input.empty() && o.instruction.empty())
    throw UsageError("--input needs an instruction");
  // Check the dataset before the (slow) model load.
  InstructionDataset ds;
  if (dataset_mode) ds = load_dataset(o.data);
  LoadedModel m = load_model(o.gen.model, model_load_options(o.gen));
  Gpt2& model = *m.model;
  if (!dataset_mode) {
    const std::string prompt = format_prompt(tmpl, o.instruction, o.input);
    const auto res = generate_responses(model, *m.tokenizer, {prompt}, g, response_marker(tmpl));
    std::fwrite(res[0].data(), 1, res[0].size(), stdout);
    std::fputc('\n', stdout);
    return 0;
  }
  AnswerOptions a;
  a.prompt_template = tmpl;
  a.gen = g;
  GenerateStats st;
  const auto arr = answer_dataset(model, *m.tokenizer, ds.entries, o.output, a, &st);
  std::printf("wrote %zu answers to %s (%lld new tokens in %.1f s, %.1f tok/s)\n", arr.size(),
              o.output.c_str(), static_cast<long long>(st.new_tokens), st.seconds,
              st.seconds > 0 ? static_cast<double>(st.new_tokens) / st.seconds : 0.0);
  return 0;
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  add_generation_options(app, o->gen);
  app.add_option("instruction", o->instruction, "Instruction to answer (or use --data)");
  app.add_option("--input", o->input, "Optional input for the instruction")->capture_default_str();
  app.add_option("--data", o->data, "Dataset file (JSON array / JSONL of instruction, input, output)");
  app.add_option("--output", o->output, "With --data: where to write entries + model_response");
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
