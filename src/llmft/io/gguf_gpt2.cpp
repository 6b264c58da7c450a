// GPT-2 in and out of GGUF for llama.cpp's "gpt2" architecture (FACTS-phase2 §1b-1d): the keys,
// value types, tensor names (model/params.h) and types that llama.cpp's converter writes and its
// loader insists on. Tests: tests/unit/io/test_gguf.cpp; against llama.cpp: tests/llama/.
#include <algorithm>
#include <cstring>
#include <ostream>

#include "llmft/core/error.h"
#include "llmft/io/gguf.h"
#include "llmft/io/safetensors.h"

namespace llmft {

namespace fs = std::filesystem;

namespace {

constexpr uint32_t kAlignment = 32;
constexpr const char* kEndOfText = "<|endoftext|>";
// llama.cpp's token types (tokenizer.ggml.token_type).
constexpr int32_t kTokenNormal = 1, kTokenControl = 3;

uint32_t file_type(GgmlType t) {  // general.file_type: ALL_F32, MOSTLY_F16, MOSTLY_Q8_0
  switch (t) {
    case GgmlType::kF32:
      return 0;
    case GgmlType::kF16:
      return 1;
    case GgmlType::kQ8_0:
      return 7;
  }
  return 0;
}

// The metadata section: key-value pairs appended as bytes, counted.
class KvWriter {
 public:
  void u32(const std::string& key, uint32_t v) { head(key, GgufValueType::kU32), put(v); }
  void f32(const std::string& key, float v) { head(key, GgufValueType::kF32), put(v); }
  void boolean(const std::string& key, bool v) {
    head(key, GgufValueType::kBool), put(static_cast<uint8_t>(v));
  }
  void string(const std::string& key, std::string_view v) {
    head(key, GgufValueType::kString), str(v);
  }
  void strings(const std::string& key, const std::vector<std::string>& v) {
    head(key, GgufValueType::kArray), put(static_cast<uint32_t>(GgufValueType::kString));
    put(static_cast<uint64_t>(v.size()));
    for (const auto& s : v) str(s);
  }
  void i32s(const std::string& key, const std::vector<int32_t>& v) {
    head(key, GgufValueType::kArray), put(static_cast<uint32_t>(GgufValueType::kI32));
    put(static_cast<uint64_t>(v.size()));
    for (int32_t x : v) put(x);
  }
  const std::string& bytes() const { return out_; }
  uint64_t count() const { return count_; }

  template <typename T>
  void put(T v) {
    out_.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  void str(std::string_view s) {
    put(static_cast<uint64_t>(s.size()));
    out_.append(s);
  }

 private:
  void head(const std::string& key, GgufValueType t) {
    str(key);
    put(static_cast<uint32_t>(t));
    ++count_;
  }
  std::string out_;
  uint64_t count_ = 0;
};

// ggml ne of a table tensor: the reversed shape of its nn.Linear / nn.Embedding layout. A Conv1D
// weight [in, out] is [out, in] as nn.Linear, so ne = {in, out}: the table's shape as is.
std::vector<int64_t> gguf_ne(const ParamSpec& s) {
  if (s.conv1d) return s.shape;
  return {s.shape.rbegin(), s.shape.rend()};
}

// The type llama.cpp's converter gives a tensor: f32 for 1-D tensors and position_embd.
GgmlType tensor_type(const ParamSpec& s, GgmlType want, bool* fallback) {
  if (s.shape.size() == 1 || s.gguf_name == "position_embd.weight") return GgmlType::kF32;
  if (want == GgmlType::kQ8_0 && gguf_ne(s)[0] % ggml_block_size(want) != 0) {
    *fallback = true;
    return GgmlType::kF16;
  }
  return want;
}

// (R, C) row-major -> (C, R) row-major.
void transpose(std::span<const float> in, std::span<float> out, int64_t R, int64_t C) {
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      out[static_cast<size_t>(c * R + r)] = in[static_cast<size_t>(r * C + c)];
}

std::string ne_str(const std::vector<int64_t>& ne) {
  return fmt::format("{{{}}}", fmt::join(ne, ", "));
}

}  // namespace

GgufExportSummary write_gpt2_gguf(const fs::path& path, const ParamTable& table,
                                  std::span<const float> params, const BpeVocabStrings& vocab,
                                  const GgufExportOptions& opts) {
  const Gpt2Config& cfg = table.config();
  LLMFT_CHECK(params.size() >= static_cast<size_t>(table.total()), "params of {} floats, need {}",
              params.size(), table.total());
  if (static_cast<int64_t>(vocab.tokens.size()) != cfg.V) {
    throw Error(fmt::format("the tokenizer has {} tokens but the model {} token embeddings; "
                            "llama.cpp needs them equal",
                            vocab.tokens.size(), cfg.V),
                "export a model with GPT-2's own vocabulary");
  }
  const auto eot = std::find(vocab.tokens.begin(), vocab.tokens.end(), kEndOfText);
  if (eot == vocab.tokens.end()) {
    throw Error(fmt::format("{}: the tokenizer has no <|endoftext|> token", vocab.origin));
  }
  const auto eot_id = static_cast<uint32_t>(eot - vocab.tokens.begin());

  KvWriter kv;
  kv.string("general.architecture", "gpt2");
  kv.string("general.type", "model");
  kv.string("general.name", opts.name);
  kv.u32("general.file_type", file_type(opts.type));
  kv.u32("general.quantization_version", 2);
  kv.u32("general.alignment", kAlignment);
  kv.u32("gpt2.context_length", static_cast<uint32_t>(cfg.maxT));
  kv.u32("gpt2.embedding_length", static_cast<uint32_t>(cfg.C));
  kv.u32("gpt2.feed_forward_length", static_cast<uint32_t>(4 * cfg.C));
  kv.u32("gpt2.block_count", static_cast<uint32_t>(cfg.L));
  kv.u32("gpt2.attention.head_count", static_cast<uint32_t>(cfg.NH));
  kv.f32("gpt2.attention.layer_norm_epsilon", cfg.ln_eps);
  kv.string("tokenizer.ggml.model", "gpt2");
  kv.string("tokenizer.ggml.pre", "gpt-2");
  kv.strings("tokenizer.ggml.tokens", vocab.tokens);
  std::vector<int32_t> types(vocab.tokens.size(), kTokenNormal);
  types[eot_id] = kTokenControl;
  kv.i32s("tokenizer.ggml.token_type", types);
  std::vector<std::string> merges;  // without vocab.bpe's "#version" line and empty lines
  for (size_t i = 0; i < vocab.merges.size(); ++i) {
    const std::string& m = vocab.merges[i];
    if (m.empty() || (i == 0 && m.starts_with("#version"))) continue;
    merges.push_back(m);
  }
  kv.strings("tokenizer.ggml.merges", merges);
  kv.u32("tokenizer.ggml.bos_token_id", eot_id);
  kv.u32("tokenizer.ggml.eos_token_id", eot_id);
  kv.boolean("tokenizer.ggml.add_bos_token", false);

  // Tensor infos, each tensor at the previous one's end rounded up to the alignment.
  KvWriter infos;
  GgufExportSummary sum;
  std::vector<GgmlType> types_of;
  uint64_t offset = 0;
  for (const ParamSpec& s : table.specs()) {
    bool fallback = false;
    const GgmlType t = tensor_type(s, opts.type, &fallback);
    sum.f16_fallbacks += fallback;
    ++sum.tensors[t];
    types_of.push_back(t);
    const std::vector<int64_t> ne = gguf_ne(s);
    infos.str(s.gguf_name);
    infos.put(static_cast<uint32_t>(ne.size()));
    for (int64_t d : ne) infos.put(static_cast<uint64_t>(d));
    infos.put(static_cast<uint32_t>(t));
    infos.put(offset);
    offset = (offset + ggml_bytes(t, s.numel) + kAlignment - 1) / kAlignment * kAlignment;
  }
  const uint64_t data_bytes = offset;

  write_file_atomic(path, [&](std::ostream& os) {
    KvWriter header;
    header.put(uint32_t{0x46554747});  // "GGUF"
    header.put(uint32_t{3});
    header.put(static_cast<uint64_t>(table.specs().size()));
    header.put(kv.count());
    os.write(header.bytes().data(), static_cast<std::streamsize>(header.bytes().size()));
    os.write(kv.bytes().data(), static_cast<std::streamsize>(kv.bytes().size()));
    os.write(infos.bytes().data(), static_cast<std::streamsize>(infos.bytes().size()));
    const uint64_t head = header.bytes().size() + kv.bytes().size() + infos.bytes().size();
    const std::string zeros(kAlignment, '\0');
    os.write(zeros.data(),
             static_cast<std::streamsize>((kAlignment - head % kAlignment) % kAlignment));
    std::vector<float> tmp;
    std::vector<unsigned char> bytes;
    uint64_t done = 0;
    for (size_t i = 0; i < table.specs().size(); ++i) {
      const ParamSpec& s = table.specs()[i];
      std::span<const float> src = table.view(params, s);
      if (s.conv1d) {  // [in, out] -> [out, in]
        tmp.resize(static_cast<size_t>(s.numel));
        transpose(src, tmp, s.shape[0], s.shape[1]);
        src = tmp;
      }
      const GgmlType t = types_of[i];
      bytes.resize(ggml_bytes(t, s.numel));
      if (t == GgmlType::kF32) {
        std::memcpy(bytes.data(), src.data(), bytes.size());
      } else if (t == GgmlType::kF16) {
        for (size_t k = 0; k < src.size(); ++k) {
          const uint16_t h = f32_to_f16(src[k]);
          std::memcpy(bytes.data() + 2 * k, &h, 2);
        }
      } else {
        quantize_q8_0(src, bytes);
      }
      os.write(reinterpret_cast<const char*>(bytes.data()),
               static_cast<std::streamsize>(bytes.size()));
      os.write(zeros.data(),
               static_cast<std::streamsize>((kAlignment - bytes.size() % kAlignment) % kAlignment));
      done += bytes.size();
      if (opts.progress) opts.progress(done, data_bytes);
    }
    sum.file_bytes = (head + kAlignment - 1) / kAlignment * kAlignment + data_bytes;
  });
  return sum;
}

Gpt2Config gpt2_config_from_gguf(const GgufFile& f) {
  const std::string p = f.path().string();
  const std::string& arch = f.get_string("general.architecture");
  if (arch != "gpt2") {
    throw Error(fmt::format("{}: architecture '{}': llmft runs GPT-2 (gpt2) models only", p, arch));
  }
  Gpt2Config cfg;
  cfg.C = f.get_u32("gpt2.embedding_length");
  cfg.L = f.get_u32("gpt2.block_count");
  cfg.NH = f.get_u32("gpt2.attention.head_count");
  cfg.maxT = f.get_u32("gpt2.context_length");
  cfg.ln_eps = f.get_f32("gpt2.attention.layer_norm_epsilon");
  const int64_t ff = f.get_u32("gpt2.feed_forward_length");
  if (ff != 4 * cfg.C) {
    throw Error(fmt::format("{}: gpt2.feed_forward_length is {}, llmft's GPT-2 needs 4 x {} = {}",
                            p, ff, cfg.C, 4 * cfg.C));
  }
  if (const GgufValue* kv = f.find_kv("gpt2.attention.head_count_kv");
      kv && !(kv->type == GgufValueType::kU32 && kv->i == cfg.NH)) {
    throw Error(fmt::format("{}: gpt2.attention.head_count_kv must be a u32 equal to head_count {}",
                            p, cfg.NH));
  }
  if (!(cfg.ln_eps > 0.0f && cfg.ln_eps < 1.0f)) {
    throw Error(fmt::format("{}: gpt2.attention.layer_norm_epsilon is {}, expected in (0, 1)", p,
                            cfg.ln_eps));
  }
  const GgufTensor* wte = f.find("token_embd.weight");
  if (!wte || wte->ne.size() != 2) {
    throw Error(fmt::format("{}: no 2-D tensor 'token_embd.weight'", p), "not a GPT-2 GGUF file");
  }
  if (wte->ne[0] != cfg.C) {
    throw Error(
        fmt::format("{}: token_embd.weight has ne {}, expected ne[0] = "
                    "gpt2.embedding_length {}",
                    p, ne_str(wte->ne), cfg.C));
  }
  cfg.V = wte->ne[1];
  cfg.tied = f.find("output.weight") == nullptr;
  cfg.dropout = 0.0f;
  // Every block has 12 tensors in the file, so the file's tensor count bounds the layer count
  // before the table (12 entries per layer) is built.
  if (cfg.L < 1 || static_cast<size_t>(cfg.L) > f.tensors().size() / 12) {
    throw Error(fmt::format("{}: gpt2.block_count {} does not match the file's {} tensors", p,
                            cfg.L, f.tensors().size()));
  }
  try {
    cfg.validate();
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", p, e.what()), e.hint());
  }
  return cfg;
}

Gpt2Gguf read_gpt2_gguf(const fs::path& path) {
  const GgufFile f(path);
  const std::string p = path.string();
  const Gpt2Config cfg = gpt2_config_from_gguf(f);
  const ParamTable table(cfg);
  // Shapes first: nothing is allocated for a file that does not fit.
  std::vector<const GgufTensor*> src;
  for (const ParamSpec& s : table.specs()) {
    const GgufTensor* t = f.find(s.gguf_name);
    if (!t) {
      throw Error(fmt::format("{}: missing tensor '{}' for {}", p, s.gguf_name, cfg.describe()));
    }
    if (t->ne != gguf_ne(s)) {
      throw Error(fmt::format("{}: tensor '{}' has ne {}, expected {} for {}", p, s.gguf_name,
                              ne_str(t->ne), ne_str(gguf_ne(s)), cfg.describe()));
    }
    src.push_back(t);
  }
  for (const GgufTensor& t : f.tensors()) {
    if (!table.find_gguf(t.name)) {
      throw Error(fmt::format("{}: unexpected tensor '{}': llama.cpp's gpt2 has no such tensor", p,
                              t.name));
    }
  }
  const std::string& tok_model = f.get_string("tokenizer.ggml.model");
  if (tok_model != "gpt2") {
    throw Error(
        fmt::format("{}: tokenizer.ggml.model is '{}', llmft reads GPT-2's byte-level BPE "
                    "(gpt2)",
                    p, tok_model));
  }
  Gpt2Gguf out{Gpt2(cfg), {}, GgmlType::kF32};
  out.vocab.tokens = f.get_string_array("tokenizer.ggml.tokens");
  out.vocab.merges = f.get_string_array("tokenizer.ggml.merges");
  out.vocab.origin = p + " tokenizer.ggml.tokens";
  out.vocab.merges_origin = p + " tokenizer.ggml.merges";
  out.type = src[0]->type;  // token_embd: the file's type of 2-D weights
  std::span<float> params = out.model.params();
  std::vector<float> tmp;
  for (size_t i = 0; i < src.size(); ++i) {
    const ParamSpec& s = table.specs()[i];
    const std::span<float> dst = table.view(params, s);
    if (!s.conv1d) {
      f.read_f32(*src[i], dst);
      continue;
    }
    tmp.resize(static_cast<size_t>(s.numel));
    f.read_f32(*src[i], tmp);
    transpose(tmp, dst, s.shape[1], s.shape[0]);  // [out, in] -> [in, out]
  }
  return out;
}

std::string ollama_modelfile(const std::string& gguf_file_name, std::string_view prompt_template,
                             int64_t context_length) {
  return fmt::format(
      "# Ollama: ollama create NAME -f Modelfile   (written by llmft export)\n"
      "FROM ./{}\n"
      "# The prompt template the model was finetuned with; {{{{ .Prompt }}}} is the instruction.\n"
      "TEMPLATE \"\"\"{}\"\"\"\n"
      "PARAMETER stop \"<|endoftext|>\"\n"
      "PARAMETER num_ctx {}\n"
      "# Greedy decoding, as llmft generate answers by default.\n"
      "PARAMETER temperature 0\n",
      gguf_file_name, prompt_template, context_length);
}

}  // namespace llmft
