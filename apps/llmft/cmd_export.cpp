// `llmft export`: a model as a GGUF file for llama.cpp and Ollama, with an Ollama Modelfile beside
// it. Library: io/gguf.h (format, tensor names, types), io/model_loader.h (where the model is
// loaded from).
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "command.h"
#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/core/json.h"
#include "llmft/core/progress.h"
#include "llmft/data/template.h"
#include "llmft/io/gguf.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/model_loader.h"
#include "llmft/io/peft.h"

namespace llmft::app {
namespace {

namespace fs = std::filesystem;

struct Options {
  std::string model, type = "f16", output, prompt_template, name;
  std::string adapter;  // LoRA adapter merged into the exported weights
  uint64_t seed = 123;
  bool modelfile = true;
};

// The template of the finetuning run a model folder came from (RUN/model with RUN/config.json),
// or "" when the folder is not a run's.
std::string run_template(const fs::path& model_dir) {
  std::error_code ec;
  const fs::path cfg = model_dir.parent_path() / "config.json";
  if (model_dir.empty() || !fs::is_regular_file(cfg, ec)) return {};
  const std::string text = read_file(cfg);
  check_json_limits(text, cfg.string());
  const auto j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("options") || !j["options"].is_object()) return {};
  const auto& o = j["options"];
  return o.contains("template") && o["template"].is_string() ? o["template"].get<std::string>()
                                                             : std::string{};
}

int run(const Options& o) {
  const GgmlType type = parse_ggml_type(o.type);
  const fs::path out = o.output;
  const fs::path modelfile = out.parent_path() / "Modelfile";
  check_output_path(out, {o.model});
  if (o.modelfile) check_output_path(modelfile, {o.model});

  ModelLoadOptions lo;
  lo.allow_random = true;
  lo.adapter = o.adapter;
  lo.log = [](const std::string& line) { std::fprintf(stderr, "%s\n", line.c_str()); };
  LoadedModel m = load_model(o.model, lo);
  if (m.random_init) m.model->init_random(o.seed);
  std::fprintf(stderr, "Model: %s\n", m.description.c_str());

  // The tokenizer goes into the file as the model's files hold it.
  const BpeVocabStrings vocab = BpeVocabStrings::read_folder(
      !m.dir.empty() && (fs::exists(m.dir / "vocab.json") || fs::exists(m.dir / "encoder.json"))
          ? m.dir
          : bundled_tokenizer_files().vocab_json.parent_path());
  std::string tmpl_name = o.prompt_template;
  const char* tmpl_from = "--template";
  if (tmpl_name.empty()) {
    tmpl_name = run_template(m.dir);
    tmpl_from = "the finetuning run's config.json";
  }
  if (tmpl_name.empty()) tmpl_name = "alpaca", tmpl_from = "the default";
  const PromptTemplate tmpl = parse_template(tmpl_name);

  GgufExportOptions eo;
  eo.type = type;
  eo.name = o.name.empty() ? (m.dir.empty() ? m.spec : m.dir.filename().string()) : o.name;
  std::optional<ProgressBar> bar;
  eo.progress = [&](uint64_t done, uint64_t total) {
    if (!bar)
      bar.emplace(fmt::format("export {}", ggml_type_name(type)), static_cast<int64_t>(total), "B");
    bar->update(static_cast<int64_t>(done));
  };
  // GGUF has no adapters: an adapter is merged into the weights it exports.
  std::unique_ptr<Gpt2> merged;
  if (m.lora) merged = merged_model(*m.model, *m.lora);
  const Gpt2& model = merged ? *merged : *m.model;
  const GgufExportSummary sum = write_gpt2_gguf(out, model.table(), model.params(), vocab, eo);
  if (bar) bar->finish();

  std::string types;
  for (const auto& [t, n] : sum.tensors)
    types += fmt::format("{}{} {}", types.empty() ? "" : ", ", n, ggml_type_name(t));
  std::printf("wrote %s: %s, %s (%lld tensors: %s)\n", out.string().c_str(), ggml_type_name(type),
              human_count(double(sum.file_bytes), "B").c_str(),
              static_cast<long long>(model.table().specs().size()), types.c_str());
  if (sum.f16_fallbacks > 0) {
    std::printf(
        "  %lld tensors stayed f16: their rows are not a multiple of 32 values (q8_0 "
        "blocks)\n",
        static_cast<long long>(sum.f16_fallbacks));
  }
  if (o.modelfile) {
    const std::string prompt =
        format_prompt(tmpl, "{{ .Prompt }}", "") + std::string(response_prefix(tmpl));
    write_file_atomic(modelfile,
                      ollama_modelfile(out.filename().string(), prompt, model.config().maxT));
    std::printf("wrote %s (template %s, from %s)\n", modelfile.string().c_str(),
                std::string(template_name(tmpl)).c_str(), tmpl_from);
  }
  std::printf("Run it:  llama-cli -m %s%s\n", out.string().c_str(),
              o.modelfile
                  ? fmt::format("   |   cd {} && ollama create NAME -f Modelfile",
                                out.parent_path().empty() ? "." : out.parent_path().string())
                        .c_str()
                  : "");
  return 0;
}

Runner setup(CLI::App& app) {
  auto o = std::make_shared<Options>();
  app.add_option("--model", o->model,
                 "Model folder (Hugging Face layout, e.g. a run's model/), name (gpt2-medium: hub "
                 "cache, else downloaded) or random:<tiny|small|gpt2 name> (randomly "
                 "initialised with --seed)")
      ->required();
  app.add_option("--adapter", o->adapter,
                 "LoRA adapter folder (PEFT layout) merged into the exported weights");
  app.add_option("--type", o->type,
                 "Type of the 2-D weights: f32, f16 or q8_0 (8-bit blocks of 32, about half "
                 "of f16's size); 1-D tensors and position_embd stay f32, as llama.cpp's "
                 "converter keeps them")
      ->capture_default_str();
  app.add_option("-o,--output", o->output, "GGUF file to write (written atomically)")->required();
  app.add_option("--template", o->prompt_template,
                 "Prompt template for the Modelfile: alpaca or phi3 (default: the finetuning "
                 "run's, when --model is a run's model/ folder; else alpaca)");
  app.add_option("--name", o->name, "general.name in the file (default: the model folder's name)");
  app.add_option("--seed", o->seed, "Initialisation seed for a random:<preset> model")
      ->capture_default_str();
  app.add_flag("!--no-modelfile", o->modelfile,
               "Do not write the Ollama Modelfile (default: write Modelfile beside the GGUF file)");
  app.footer(
      "Writes a GGUF v3 file for llama.cpp's gpt2 architecture with the full tokenizer, and "
      "a Modelfile beside it (FROM ./FILE, the prompt template, stop at <|endoftext|>, "
      "the context length). See docs/export.md.");
  return [o] { return run(*o); };
}

const Registration reg{"export", "Export a model to GGUF for llama.cpp and Ollama", setup};

}  // namespace
}  // namespace llmft::app
