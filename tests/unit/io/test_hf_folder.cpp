// GPT-2 weights in Hugging Face's layout: folder round trips are bit-identical, names follow
// GPT2LMHeadModel.save_pretrained, the prefix/buffer/tied-head rules, and clear errors for
// missing, unexpected and misshapen tensors and bad config.json files.
#include <cstring>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/hf_folder.h"
#include "llmft/io/safetensors.h"
#include "test_util.h"

using namespace llmft;
using llmft::test::TempDir;
namespace fs = std::filesystem;

namespace {

Gpt2Config tiny(bool tied) {
  Gpt2Config c;
  c.V = 11;
  c.maxT = 8;
  c.C = 8;
  c.L = 2;
  c.NH = 2;
  c.tied = tied;
  return c;
}

// Distinct, reproducible values (padding between tensors stays 0).
std::vector<float> fill(const ParamTable& t, float salt = 0.0f) {
  std::vector<float> p(static_cast<size_t>(t.total()), 0.0f);
  int64_t k = 0;
  for (const auto& s : t.specs())
    for (auto& v : t.view(std::span<float>(p), s)) v = salt + 0.001f * static_cast<float>(k++ % 9973) - 3.0f;
  return p;
}

// Tensors as a file would hold them: the given name for each table entry.
std::vector<TensorToWrite> tensors_of(const ParamTable& t, const std::vector<float>& p,
                                      const std::string& prefix = "") {
  std::vector<TensorToWrite> out;
  for (const auto& s : t.specs()) {
    const std::string name = s.name == "lm_head.weight" ? s.name : prefix + s.name;
    out.push_back({name, s.shape, t.view(std::span<const float>(p), s)});
  }
  return out;
}

bool same_bits(const ParamTable& t, const std::vector<float>& a, const std::vector<float>& b,
               const std::string& name) {
  const ParamSpec* s = t.find(name);
  const auto x = t.view(std::span<const float>(a), *s), y = t.view(std::span<const float>(b), *s);
  return std::memcmp(x.data(), y.data(), x.size() * 4) == 0;
}

void expect_load_error(const fs::path& file, const ParamTable& t,
                       std::initializer_list<std::string> needles) {
  std::vector<float> p(static_cast<size_t>(t.total()));
  try {
    load_gpt2_weights(file, t, p);
    ADD_FAILURE() << "no error loading " << file;
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(file.string()), std::string::npos) << what;
    for (const auto& n : needles) EXPECT_NE(what.find(n), std::string::npos) << "'" << n << "' in: " << what;
  }
}

}  // namespace

TEST(HfFolder, UntiedRoundTripIsBitIdentical) {
  TempDir dir;
  const Gpt2Config cfg = tiny(false);
  const ParamTable table(cfg);
  const auto params = fill(table);
  write_hf_folder(dir / "ckpt", cfg, table, params);
  for (const char* f : {"config.json", "model.safetensors", "vocab.json", "merges.txt",
                        "generation_config.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::is_regular_file(dir / "ckpt" / f)) << f;
  // Built beside the target and renamed: no temporary folder left behind.
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1);

  const HfModel m = read_hf_folder(dir / "ckpt");
  EXPECT_EQ(m.model.config().describe(), cfg.describe());
  EXPECT_EQ(m.model.config().ln_eps, cfg.ln_eps);
  EXPECT_EQ(m.model.config().dropout, cfg.dropout);
  EXPECT_FALSE(m.info.lm_head_from_wte);
  EXPECT_TRUE(m.info.prefixed);
  ASSERT_EQ(m.model.params().size(), params.size());
  EXPECT_EQ(std::memcmp(m.model.params().data(), params.data(), params.size() * 4), 0);
  // Tokenizer files are GPT-2's encoder.json / vocab.bpe under Hugging Face's names.
  EXPECT_EQ(read_file(dir / "ckpt" / "vocab.json"), read_file(data_dir() / "gpt2" / "encoder.json"));
  EXPECT_EQ(read_file(dir / "ckpt" / "merges.txt"), read_file(data_dir() / "gpt2" / "vocab.bpe"));
}

TEST(HfFolder, TiedRoundTripAndOverwrite) {
  TempDir dir;
  Gpt2Config cfg = tiny(true);
  cfg.dropout = 0.1f;
  const ParamTable table(cfg);
  write_hf_folder(dir / "ckpt", cfg, table, fill(table, 1.0f));
  const auto params = fill(table, 2.0f);
  write_hf_folder(dir / "ckpt", cfg, table, params);  // existing folder: files replaced
  const HfModel m = read_hf_folder(dir / "ckpt");
  EXPECT_TRUE(m.model.config().tied);
  EXPECT_EQ(m.model.config().dropout, 0.1f);
  EXPECT_EQ(std::memcmp(m.model.params().data(), params.data(), params.size() * 4), 0);
  SafetensorsFile st(dir / "ckpt" / "model.safetensors");
  EXPECT_EQ(st.find("lm_head.weight"), nullptr);  // tied: the head is wte, as in HF's gpt2
}

TEST(HfFolder, NamesAndConfigFollowTransformers) {
  TempDir dir;
  const Gpt2Config cfg = tiny(false);
  const ParamTable table(cfg);
  write_hf_folder(dir / "ckpt", cfg, table, fill(table));
  SafetensorsFile st(dir / "ckpt" / "model.safetensors");
  EXPECT_EQ(st.metadata().at("format"), "pt");  // transformers refuses files without it
  EXPECT_EQ(st.tensors().size(), table.specs().size());
  ASSERT_NE(st.find("transformer.h.1.attn.c_attn.weight"), nullptr);
  EXPECT_EQ(st.find("transformer.h.1.attn.c_attn.weight")->shape, (std::vector<int64_t>{8, 24}));
  EXPECT_NE(st.find("transformer.wte.weight"), nullptr);
  EXPECT_NE(st.find("transformer.ln_f.bias"), nullptr);
  EXPECT_NE(st.find("lm_head.weight"), nullptr);
  for (const auto& t : st.tensors()) EXPECT_EQ(t.dtype, Dtype::F32) << t.name;

  const auto j = nlohmann::json::parse(read_file(dir / "ckpt" / "config.json"));
  EXPECT_EQ(j["model_type"], "gpt2");
  EXPECT_EQ(j["architectures"], nlohmann::json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(j["activation_function"], "gelu_new");
  EXPECT_EQ(j["vocab_size"], 11);
  EXPECT_EQ(j["n_positions"], 8);
  EXPECT_EQ(j["n_ctx"], 8);
  EXPECT_EQ(j["n_embd"], 8);
  EXPECT_EQ(j["n_layer"], 2);
  EXPECT_EQ(j["n_head"], 2);
  EXPECT_TRUE(j["n_inner"].is_null());
  EXPECT_EQ(j["layer_norm_epsilon"], 1e-05);
  EXPECT_EQ(j["bos_token_id"], 50256);
  EXPECT_EQ(j["eos_token_id"], 50256);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_EQ(j["torch_dtype"], "float32");
  for (const char* k : {"resid_pdrop", "embd_pdrop", "attn_pdrop"}) EXPECT_EQ(j[k], 0.0) << k;
}

TEST(HfWeights, UnprefixedNamesAndBuffersAsInOpenAIsCheckpoint) {
  TempDir dir;
  const ParamTable table(tiny(false));
  const auto params = fill(table);
  auto tensors = tensors_of(table, params);
  std::vector<float> mask(64, 1.0f), masked(1, -1e4f);
  for (int l = 0; l < 2; ++l) {
    tensors.push_back({fmt::format("h.{}.attn.bias", l), {1, 1, 8, 8}, mask});
    tensors.push_back({fmt::format("h.{}.attn.masked_bias", l), {}, masked});
  }
  write_safetensors(dir / "m.safetensors", tensors);
  std::vector<float> got(params.size());
  const LoadInfo info = load_gpt2_weights(dir / "m.safetensors", table, got);
  EXPECT_FALSE(info.prefixed);
  EXPECT_EQ(info.ignored_buffers, 4);
  EXPECT_EQ(std::memcmp(got.data(), params.data(), got.size() * 4), 0);
}

TEST(HfWeights, TiedCheckpointIntoUntiedModelCopiesWte) {
  TempDir dir;
  const ParamTable tied(tiny(true)), untied(tiny(false));
  const auto params = fill(tied);
  write_safetensors(dir / "m.safetensors", tensors_of(tied, params));
  std::vector<float> got(static_cast<size_t>(untied.total()));
  const LoadInfo info = load_gpt2_weights(dir / "m.safetensors", untied, got);
  EXPECT_TRUE(info.lm_head_from_wte);
  const auto wte = untied.view(std::span<const float>(got), *untied.find("wte.weight"));
  const auto head = untied.view(std::span<const float>(got), *untied.find("lm_head.weight"));
  EXPECT_EQ(std::memcmp(wte.data(), head.data(), wte.size() * 4), 0);
  EXPECT_TRUE(same_bits(untied, got, fill(untied), "h.1.mlp.c_proj.weight"));
  // The same through a folder: read_hf_folder(dir, /*tied=*/false).
  write_file_atomic(dir / "f" / "config.json", hf_config_json(tiny(true)));
  fs::copy_file(dir / "m.safetensors", dir / "f" / "model.safetensors");
  const HfModel m = read_hf_folder(dir / "f", /*tied=*/false);
  EXPECT_FALSE(m.model.config().tied);
  EXPECT_TRUE(m.info.lm_head_from_wte);
}

TEST(HfWeights, UntiedCheckpointIntoTiedModel) {
  TempDir dir;
  const ParamTable tied(tiny(true)), untied(tiny(false));
  auto params = fill(untied);
  // Head equal to wte: accepted (older HF files store the tied head too).
  const auto wte = untied.view(std::span<float>(params), *untied.find("wte.weight"));
  auto head = untied.view(std::span<float>(params), *untied.find("lm_head.weight"));
  std::copy(wte.begin(), wte.end(), head.begin());
  write_safetensors(dir / "same.safetensors", tensors_of(untied, params, "transformer."));
  std::vector<float> got(static_cast<size_t>(tied.total()));
  EXPECT_NO_THROW(load_gpt2_weights(dir / "same.safetensors", tied, got));
  head[0] += 1.0f;  // a trained separate head would be lost: refuse
  write_safetensors(dir / "diff.safetensors", tensors_of(untied, params, "transformer."));
  expect_load_error(dir / "diff.safetensors", tied, {"lm_head.weight", "tied"});
}

TEST(HfWeights, ConvertsF16Checkpoints) {
  TempDir dir;
  const ParamTable table(tiny(true));
  // Build an F16 file by hand: every value 1.5 (0x3e00).
  nlohmann::ordered_json h;
  std::string data;
  for (const auto& s : table.specs()) {
    h[s.name] = {{"dtype", "F16"}, {"shape", s.shape},
                 {"data_offsets", {data.size(), data.size() + 2 * s.numel}}};
    for (int64_t i = 0; i < s.numel; ++i) data += std::string("\x00\x3e", 2);
  }
  const std::string header = h.dump();
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  write_file_atomic(dir / "m.safetensors", bytes + header + data);
  std::vector<float> got(static_cast<size_t>(table.total()));
  const LoadInfo info = load_gpt2_weights(dir / "m.safetensors", table, got);
  EXPECT_EQ(info.converted_tensors, static_cast<int64_t>(table.specs().size()));
  for (const auto& s : table.specs())
    for (float v : table.view(std::span<const float>(got), s)) ASSERT_EQ(v, 1.5f) << s.name;
}

TEST(HfWeightsErrors, MissingTensor) {
  TempDir dir;
  const ParamTable table(tiny(false));
  const auto params = fill(table);
  auto tensors = tensors_of(table, params);
  std::erase_if(tensors, [](const TensorToWrite& t) { return t.name == "h.1.ln_2.bias"; });
  write_safetensors(dir / "m.safetensors", tensors);
  expect_load_error(dir / "m.safetensors", table, {"missing tensor 'h.1.ln_2.bias'"});
}

TEST(HfWeightsErrors, UnexpectedTensor) {
  TempDir dir;
  const ParamTable table(tiny(false));
  const auto params = fill(table);
  auto tensors = tensors_of(table, params);
  std::vector<float> extra(3);
  tensors.push_back({"transformer.h.0.attn.q_proj.weight", {3}, extra});
  write_safetensors(dir / "m.safetensors", tensors);
  expect_load_error(dir / "m.safetensors", table, {"unexpected tensor 'transformer.h.0.attn.q_proj.weight'"});
}

TEST(HfWeightsErrors, WrongShape) {
  TempDir dir;
  const ParamTable table(tiny(false)), wider([] {
    Gpt2Config c = tiny(false);
    c.C = 16;
    return c;
  }());
  write_safetensors(dir / "m.safetensors", tensors_of(wider, fill(wider)));
  expect_load_error(dir / "m.safetensors", table, {"'wte.weight'", "shape [11, 16]", "expected [11, 8]"});
}

TEST(HfWeightsErrors, SameTensorPrefixedAndNot) {
  TempDir dir;
  const ParamTable table(tiny(false));
  const auto params = fill(table);
  auto tensors = tensors_of(table, params);
  tensors.push_back({"transformer.wpe.weight", table.find("wpe.weight")->shape,
                     table.view(std::span<const float>(params), *table.find("wpe.weight"))});
  write_safetensors(dir / "m.safetensors", tensors);
  expect_load_error(dir / "m.safetensors", table, {"'wpe.weight' appears twice"});
}

TEST(HfConfig, ReadsOpenAIsConfig) {
  // config.json of openai-community/gpt2-medium (abridged to the fields that matter).
  const std::string text = R"({"activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1, "bos_token_id": 50256, "embd_pdrop": 0.1, "eos_token_id": 50256,
    "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_ctx": 1024, "n_embd": 1024,
    "n_head": 16, "n_layer": 24, "n_positions": 1024, "n_special": 0, "predict_special_tokens": true,
    "resid_pdrop": 0.1, "vocab_size": 50257})";
  const Gpt2Config c = parse_hf_config(text, "config.json");
  EXPECT_EQ(c.describe(), "L=24 C=1024 NH=16 V=50257 maxT=1024 tied");
  EXPECT_EQ(c.ln_eps, 1e-5f);
  EXPECT_EQ(c.dropout, 0.1f);
}

TEST(HfConfig, ClearErrors) {
  const auto expect = [](const std::string& text, const std::string& needle) {
    try {
      parse_hf_config(text, "/x/config.json");
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find("/x/config.json"), std::string::npos) << what;
      EXPECT_NE(what.find(needle), std::string::npos) << "'" << needle << "' in: " << what;
    }
  };
  const std::string base = R"("n_embd": 8, "n_layer": 2, "n_head": 2, "vocab_size": 11, "n_positions": 8)";
  expect("{", "line 1, column 2: the JSON ends early (an object is not closed)");
  expect("[]", "object");
  expect(R"({"n_layer": 2, "n_head": 2, "vocab_size": 11, "n_positions": 8})", "'n_embd'");
  expect("{" + base + R"(, "model_type": "llama"})", "'model_type'");
  expect("{" + base + R"(, "activation_function": "relu"})", "'activation_function'");
  expect("{" + base + R"(, "n_inner": 16})", "'n_inner'");
  expect("{" + base + R"(, "resid_pdrop": 1.5})", "'resid_pdrop'");
  expect(R"({"n_embd": 9, "n_layer": 2, "n_head": 2, "vocab_size": 11, "n_positions": 8})", "invalid GPT-2 shape");
  expect(R"({"n_embd": "8", "n_layer": 2, "n_head": 2, "vocab_size": 11, "n_positions": 8})", "'n_embd'");
}

TEST(HfFolderErrors, NotAModelFolder) {
  TempDir dir;
  EXPECT_THROW(read_hf_folder(dir.path()), Error);
  write_file_atomic(dir / "config.json", hf_config_json(tiny(true)));
  write_file_atomic(dir / "pytorch_model.bin", std::string("x"));
  try {
    read_hf_folder(dir.path());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no model.safetensors"), std::string::npos);
    EXPECT_NE(e.hint().find("pytorch_model.bin"), std::string::npos);
  }
}
