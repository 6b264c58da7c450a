// load_model: resolve a model spec, read its folder and tokenizer, or set up a random preset.
#include "llmft/io/model_loader.h"

#include <fmt/format.h>

#include "llmft/core/error.h"
#include "llmft/io/gguf.h"
#include "llmft/io/hub.h"
#include "llmft/io/peft.h"

namespace llmft {

namespace fs = std::filesystem;

Gpt2Config random_preset(const std::string& name) {
  Gpt2Config c;
  if (name == "tiny") {
    c.L = 2, c.C = 64, c.NH = 2;
  } else if (name == "small") {
    c.L = 4, c.C = 128, c.NH = 4;
  } else if (is_known_model_name(name)) {
    c = Gpt2Config::from_name(name);
  } else {
    throw UsageError(fmt::format("unknown random model preset '{}'", name),
                     "expected random:tiny, random:small, or random:<gpt2 name>");
  }
  return c;
}

namespace {

LoadedModel random_model(const std::string& preset, const ModelLoadOptions& opts) {
  Gpt2Config cfg = random_preset(preset);
  cfg.tied = opts.tied.value_or(false);
  cfg.dropout = opts.dropout.value_or(0.0f);
  LoadedModel m;
  m.model = std::make_unique<Gpt2>(cfg);
  m.random_init = true;
  m.tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::load_bundled());
  m.spec = "random:" + preset;
  m.description = fmt::format("random:{} (randomly initialised, NOT pretrained; {})", preset,
                              cfg.describe());
  return m;
}

void log(const ModelLoadOptions& opts, const std::string& line) {
  if (opts.log) opts.log(line);
}

// The folder of a named model or a path, or nullopt when a known name that cannot be had may
// fall back to a random model (after saying why through opts.log).
std::optional<fs::path> resolve_or_fall_back(const std::string& spec,
                                             const ModelLoadOptions& opts) {
  try {
    return resolve_model(spec, opts.allow_download);
  } catch (const Error& e) {
    // Only a known model name that cannot be had falls back; a typo in a name or a path is the
    // user's error and must not silently train a random model.
    if (!opts.fallback_to_random || !is_known_model_name(spec)) throw;
    log(opts, fmt::format("Model '{}' is not available: {}", spec, e.what()));
    log(opts, fmt::format(
        "Falling back to a RANDOMLY INITIALISED small GPT-2 (random:{}) so that every step of the "
        "recipe still runs. Its answers will be nonsense: this is NOT a pretrained model.",
        kFallbackPreset));
    log(opts, "(Use --no-fallback to fail instead; put the model in the Hugging Face cache or "
              "allow the download to train the real thing.)");
    return std::nullopt;
  }
}

std::unique_ptr<BpeTokenizer> folder_tokenizer(const fs::path& dir, TokenizerSource source) {
  std::error_code ec;
  const bool has_vocab =
      source == TokenizerSource::kFolderOrBundled &&
      (fs::exists(dir / "vocab.json", ec) || fs::exists(dir / "encoder.json", ec));
  return std::make_unique<BpeTokenizer>(has_vocab ? BpeTokenizer::load_folder(dir)
                                                  : BpeTokenizer::load_bundled());
}

LoadedModel folder_model(const std::string& spec, const fs::path& dir,
                         const ModelLoadOptions& opts) {
  HfModel hf = read_hf_folder(dir, opts.tied, opts.dropout);
  LoadedModel m;
  m.model = std::make_unique<Gpt2>(std::move(hf.model));
  m.info = hf.info;
  m.tokenizer = folder_tokenizer(dir, opts.tokenizer);
  m.dir = dir;
  m.spec = dir.string();
  m.pretrained = true;
  m.description = fmt::format("{} (pretrained weights from {}; {}{})", spec, dir.string(),
                              m.cfg().describe(),
                              hf.info.lm_head_from_wte ? ", lm_head copied from wte" : "");
  if (m.cfg().V < m.tokenizer->vocab_size()) {
    throw Error(fmt::format("{}: the model has {} token embeddings but the tokenizer {} tokens",
                            dir.string(), m.cfg().V, m.tokenizer->vocab_size()),
                "use the tokenizer files the model was trained with");
  }
  return m;
}

// A GGUF file (llmft export's, or llama.cpp's converter's for GPT-2): its weights (f16 widened
// exactly, q8_0 dequantized) and the tokenizer stored in it.
LoadedModel gguf_model(const fs::path& file, const ModelLoadOptions& opts) {
  Gpt2Gguf g = read_gpt2_gguf(file);
  if (opts.tied && *opts.tied != g.model.config().tied) {
    throw Error(fmt::format("{}: the file's output head is {}, but {} was asked for",
                            file.string(), g.model.config().tied ? "tied" : "untied",
                            *opts.tied ? "tied" : "untied"));
  }
  LoadedModel m;
  m.tokenizer = std::make_unique<BpeTokenizer>(BpeTokenizer::from_strings(g.vocab));
  m.model = std::make_unique<Gpt2>(std::move(g.model));
  m.spec = file.string();
  m.pretrained = true;
  m.description = fmt::format("{} (GGUF, {} weights; {})", file.string(), ggml_type_name(g.type),
                              m.cfg().describe());
  if (m.cfg().V < m.tokenizer->vocab_size()) {
    throw Error(fmt::format("{}: the model has {} token embeddings but the tokenizer {} tokens",
                            file.string(), m.cfg().V, m.tokenizer->vocab_size()));
  }
  return m;
}

}  // namespace

bool is_gguf_path(const std::string& spec) {
  std::error_code ec;
  return spec.ends_with(".gguf") && fs::is_regular_file(spec, ec);
}

// The model as `spec` names it, without an adapter.
LoadedModel load_base(const std::string& spec, const ModelLoadOptions& opts) {
  if (opts.allow_random && spec.starts_with("random:")) return random_model(spec.substr(7), opts);
  if (is_gguf_path(spec)) return gguf_model(spec, opts);
  const std::optional<fs::path> dir = resolve_or_fall_back(spec, opts);
  if (!dir) {
    LoadedModel m = random_model(kFallbackPreset, opts);
    m.fallback = true;
    return m;
  }
  return folder_model(spec, *dir, opts);
}

LoadedModel load_model(const std::string& spec, const ModelLoadOptions& opts) {
  LoadedModel m = load_base(spec, opts);
  if (!opts.adapter.empty()) {
    PeftAdapter a = read_peft_adapter(opts.adapter, m.cfg());
    m.lora = std::move(a.lora);
    m.model->set_lora(m.lora.get());
    m.adapter_dir = opts.adapter;
    const LoraConfig& lc = m.lora->config();
    m.description += fmt::format(" + LoRA adapter {} (rank {}, alpha {:g})", opts.adapter.string(),
                                 lc.rank, lc.alpha);
  }
  return m;
}

}  // namespace llmft
