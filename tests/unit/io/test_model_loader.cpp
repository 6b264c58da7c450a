// io's load_model, the one model + tokenizer loader of every command: random presets only where
// allowed, a folder's weights and tokenizer (or the bundled one), the vocabulary check, the
// dropout and head overrides, and the offline fallback that only a known model name gets.
#include <cstdlib>
#include <optional>
#include <nlohmann/json.hpp>

#include "llmft/core/error.h"
#include "llmft/core/io.h"
#include "llmft/io/model_loader.h"
#include "llmft/model/params.h"
#include "test_util.h"

using namespace llmft;
using llmft::test::TempDir;
namespace fs = std::filesystem;

namespace {

// A folder with a tiny model of `V` embeddings (distinct weights) and, with `small_vocab`, a
// 257-token byte-level vocabulary (the 256 bytes of GPT-2's encoder.json and <|endoftext|>).
struct TinyFolder {
  TempDir tmp;
  fs::path dir = tmp / "model";
  Gpt2Config cfg;
  std::vector<float> params;

  TinyFolder(int64_t V, bool small_vocab) {
    cfg.V = V;
    cfg.maxT = 8;
    cfg.C = 8;
    cfg.L = 1;
    cfg.NH = 2;
    cfg.dropout = 0.125f;
    const ParamTable table(cfg);
    params.assign(static_cast<size_t>(table.total()), 0.0f);  // padding between tensors stays 0
    int64_t k = 0;
    for (const auto& s : table.specs()) {
      for (auto& v : table.view(std::span<float>(params), s)) {
        v = 0.001f * static_cast<float>(k++ % 977);
      }
    }
    HfTokenizerFiles tok = bundled_tokenizer_files();
    if (small_vocab) {
      const auto full = nlohmann::json::parse(read_file(tok.vocab_json));
      nlohmann::json small = nlohmann::json::object();
      for (const auto& [token, id] : full.items()) {
        if (id.get<int>() < 256) small[token] = id;
      }
      small["<|endoftext|>"] = 256;
      tok = {tmp / "vocab.json", tmp / "merges.txt"};
      write_file_atomic(tok.vocab_json, small.dump());
      write_file_atomic(tok.merges_txt, "#version: 0.2\n");
    }
    write_hf_folder(dir, cfg, table, params, tok);
  }
};


}  // namespace

TEST(ModelLoader, RandomPresetsOnlyWhereAllowed) {
  ModelLoadOptions o;
  EXPECT_THROW(load_model("random:tiny", o), UsageError);  // generate and chat: not a model
  o.allow_random = true;
  o.tied = true;
  o.dropout = 0.25f;
  const LoadedModel m = load_model("random:tiny", o);
  EXPECT_EQ(m.cfg().L, 2);
  EXPECT_EQ(m.cfg().C, 64);
  EXPECT_EQ(m.cfg().NH, 2);
  EXPECT_EQ(m.cfg().V, 50257);
  EXPECT_TRUE(m.cfg().tied);
  EXPECT_EQ(m.cfg().dropout, 0.25f);
  EXPECT_TRUE(m.random_init);  // the caller initialises
  ASSERT_NE(m.tokenizer, nullptr);
  EXPECT_EQ(m.tokenizer->vocab_size(), 50257);
  EXPECT_FALSE(m.pretrained);
  EXPECT_FALSE(m.fallback);
  EXPECT_EQ(m.spec, "random:tiny");
  EXPECT_TRUE(m.dir.empty());
  EXPECT_NE(m.description.find("NOT pretrained"), std::string::npos) << m.description;
  EXPECT_THROW(load_model("random:huge", o), UsageError);
}

TEST(ModelLoader, ReadsAFolderWithItsOwnTokenizer) {
  const TinyFolder f(/*V=*/300, /*small_vocab=*/true);
  const LoadedModel m = load_model(f.dir.string(), {});
  EXPECT_EQ(m.cfg().V, 300);
  EXPECT_EQ(m.cfg().C, 8);
  EXPECT_EQ(m.cfg().dropout, 0.125f);  // the folder's resid_pdrop: no override asked for
  EXPECT_FALSE(m.cfg().tied);
  EXPECT_FALSE(m.random_init);
  EXPECT_TRUE(std::equal(f.params.begin(), f.params.end(), m.model->params().begin()));
  ASSERT_NE(m.tokenizer, nullptr);
  EXPECT_EQ(m.tokenizer->vocab_size(), 257);  // the folder's, not the bundled 50257
  EXPECT_TRUE(m.pretrained);
  EXPECT_EQ(m.dir, f.dir);
  EXPECT_EQ(m.spec, f.dir.string());
  EXPECT_NE(m.description.find("pretrained weights from " + f.dir.string()), std::string::npos)
      << m.description;

  ModelLoadOptions o;
  o.dropout = 0.0f;
  EXPECT_EQ(load_model(f.dir.string(), o).cfg().dropout, 0.0f);
}

TEST(ModelLoader, RejectsAVocabularySmallerThanTheTokenizers) {
  // 300 embeddings serve the folder's 257 tokens but not the bundled 50,257 (finetune's choice).
  const TinyFolder f(/*V=*/300, /*small_vocab=*/true);
  ModelLoadOptions o;
  o.tokenizer = TokenizerSource::kBundled;
  try {
    load_model(f.dir.string(), o);
    FAIL() << "a 300-token model with the bundled tokenizer loaded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("300 token embeddings"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("50257"), std::string::npos) << e.what();
  }
  const TinyFolder tiny(/*V=*/11, /*small_vocab=*/true);
  EXPECT_THROW(load_model(tiny.dir.string(), {}), Error);
}

TEST(ModelLoader, FallsBackOnlyForAKnownNameThatCannotBeHad) {
  TempDir tmp;
  const test::ScopedEnv cache("HF_HUB_CACHE", (tmp / "hub").string());
  const test::ScopedEnv offline("HF_HUB_OFFLINE", "1");
  std::vector<std::string> log;
  ModelLoadOptions o;
  o.log = [&](const std::string& s) { log.push_back(s); };
  EXPECT_THROW(load_model("gpt2-medium", o), Error);  // no fallback asked for
  EXPECT_TRUE(log.empty());

  o.fallback_to_random = true;
  const LoadedModel m = load_model("gpt2-medium", o);
  EXPECT_TRUE(m.fallback);
  EXPECT_FALSE(m.pretrained);
  EXPECT_EQ(m.spec, std::string("random:") + kFallbackPreset);
  EXPECT_EQ(m.cfg().C, random_preset(kFallbackPreset).C);
  EXPECT_TRUE(m.random_init);
  ASSERT_FALSE(log.empty());
  EXPECT_NE(log[0].find("Model 'gpt2-medium' is not available"), std::string::npos) << log[0];

  // A typo is the user's error, never a silent random model.
  EXPECT_THROW(load_model("gpt2-meduim", o), UsageError);
}
